"""What every party shares.

Paillier keys and checks, fixed-point encoding and packing, wire format, model maths, data
loading, errors and the small Flask and HTTP helpers.
"""

"""Cryptography every party needs: big integers, Paillier keys, fixed-point encoding, packing, randomness."""

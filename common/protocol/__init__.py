"""The protocol every party speaks: the job spec, the messages, the models' statistics and the errors."""

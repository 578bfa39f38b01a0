"""fetalhead: foetal head biometry in 2D ultrasound (research use, not a medical device)."""

__version__ = "0.1.0"

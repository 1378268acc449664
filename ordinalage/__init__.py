"""ordinalage: facial age estimation by classification, ordinal regression and regression."""

__version__ = "0.1.0"

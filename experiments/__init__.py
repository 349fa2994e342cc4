"""Measured studies that use the library (the library never imports them); run through scripts/."""

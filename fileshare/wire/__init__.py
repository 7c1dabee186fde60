"""Wire formats: pure parsing and formatting, no transports."""

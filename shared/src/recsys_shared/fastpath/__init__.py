"""Where the read path bypasses its frameworks and libraries, for measured speed; see README.md
beside this file for the boundary, the figures and how to turn it off."""

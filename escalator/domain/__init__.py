"""The pure core of escalator: escalations, their states, and their task attributes."""

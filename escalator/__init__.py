"""escalator: hands a conversation from an AI agent to a human through Twilio TaskRouter."""

__version__ = "0.1.0"

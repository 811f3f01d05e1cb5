"""The only code that talks to Twilio TaskRouter, through the twilio SDK's async methods."""

from escalator.taskrouter.client import TaskRouterClient

__all__ = ["TaskRouterClient"]

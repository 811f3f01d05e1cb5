"""The dispatcher: carries out the side effects owed to TaskRouter that the outbox holds."""

from escalator.dispatcher.loop import Clock, Dispatcher

__all__ = ["Clock", "Dispatcher"]

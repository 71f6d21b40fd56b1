"""Conversation threads and where they are stored: in memory or in a SQLite file."""

from shoal.threads.base import Thread, ThreadStore, new_thread_id
from shoal.threads.memory import InMemoryThreadStore
from shoal.threads.sqlite import SQLiteThreadStore

__all__ = [
    "InMemoryThreadStore",
    "SQLiteThreadStore",
    "Thread",
    "ThreadStore",
    "new_thread_id",
]

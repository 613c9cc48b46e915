"""The alternatives a user would pick instead of the gateway, each set up as its documentation says.

Every app authenticates the same JWT (``?token=`` or the Socket.IO ``auth`` payload), keeps one
room, group or channel per user, and pushes what is published for that user through Redis.
"""

"""Chat history for the chat app: conversations owned by one principal, one row per message.

``store`` reads and writes them (no HTTP, no policy beyond ownership);
``export`` renders one as Markdown or JSON. Zero-retention workspaces never
reach this package: the API refuses before anything is stored.
"""

from levant.conversations.export import to_json, to_markdown
from levant.conversations.store import (
    ConversationInfo,
    ConversationNotFound,
    ConversationUpdate,
    MessageInfo,
    append_message,
    create_conversation,
    delete_conversation,
    get_conversation,
    list_conversations,
    list_messages,
    truncate_messages,
    update_conversation,
)

__all__ = [
    "ConversationInfo",
    "ConversationNotFound",
    "ConversationUpdate",
    "MessageInfo",
    "append_message",
    "create_conversation",
    "delete_conversation",
    "get_conversation",
    "list_conversations",
    "list_messages",
    "to_json",
    "to_markdown",
    "truncate_messages",
    "update_conversation",
]

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class InvalidateUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class InvalidateUserResponse(_message.Message):
    __slots__ = ("was_cached",)
    WAS_CACHED_FIELD_NUMBER: _ClassVar[int]
    was_cached: bool
    def __init__(self, was_cached: _Optional[bool] = ...) -> None: ...

import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class User(_message.Message):
    __slots__ = ("id", "external_id", "username", "first_name", "last_name", "image_url", "has_image", "primary_email_address_id", "primary_email_address", "primary_phone_number_id", "email_addresses", "phone_numbers", "public_metadata", "private_metadata", "unsafe_metadata", "banned", "locked", "password_enabled", "two_factor_enabled", "created_at", "updated_at", "last_sign_in_at", "last_active_at", "raw_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    HAS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_EMAIL_ADDRESS_ID_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_PHONE_NUMBER_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_METADATA_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_METADATA_FIELD_NUMBER: _ClassVar[int]
    UNSAFE_METADATA_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_ENABLED_FIELD_NUMBER: _ClassVar[int]
    TWO_FACTOR_ENABLED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SIGN_IN_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    RAW_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    external_id: str
    username: str
    first_name: str
    last_name: str
    image_url: str
    has_image: bool
    primary_email_address_id: str
    primary_email_address: str
    primary_phone_number_id: str
    email_addresses: _containers.RepeatedCompositeFieldContainer[EmailAddress]
    phone_numbers: _containers.RepeatedCompositeFieldContainer[PhoneNumber]
    public_metadata: _struct_pb2.Struct
    private_metadata: _struct_pb2.Struct
    unsafe_metadata: _struct_pb2.Struct
    banned: bool
    locked: bool
    password_enabled: bool
    two_factor_enabled: bool
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    last_sign_in_at: _timestamp_pb2.Timestamp
    last_active_at: _timestamp_pb2.Timestamp
    raw_json: str
    def __init__(self, id: _Optional[str] = ..., external_id: _Optional[str] = ..., username: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., image_url: _Optional[str] = ..., has_image: _Optional[bool] = ..., primary_email_address_id: _Optional[str] = ..., primary_email_address: _Optional[str] = ..., primary_phone_number_id: _Optional[str] = ..., email_addresses: _Optional[_Iterable[_Union[EmailAddress, _Mapping]]] = ..., phone_numbers: _Optional[_Iterable[_Union[PhoneNumber, _Mapping]]] = ..., public_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., private_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., unsafe_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., banned: _Optional[bool] = ..., locked: _Optional[bool] = ..., password_enabled: _Optional[bool] = ..., two_factor_enabled: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_sign_in_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_active_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., raw_json: _Optional[str] = ...) -> None: ...

class EmailAddress(_message.Message):
    __slots__ = ("id", "email_address", "verification_status")
    ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    email_address: str
    verification_status: str
    def __init__(self, id: _Optional[str] = ..., email_address: _Optional[str] = ..., verification_status: _Optional[str] = ...) -> None: ...

class PhoneNumber(_message.Message):
    __slots__ = ("id", "phone_number", "verification_status")
    ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    phone_number: str
    verification_status: str
    def __init__(self, id: _Optional[str] = ..., phone_number: _Optional[str] = ..., verification_status: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class BatchGetUsersRequest(_message.Message):
    __slots__ = ("user_ids",)
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetUsersResponse(_message.Message):
    __slots__ = ("users", "missing_user_ids")
    USERS_FIELD_NUMBER: _ClassVar[int]
    MISSING_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[User]
    missing_user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, users: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., missing_user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class UserFilter(_message.Message):
    __slots__ = ("user_ids", "email_addresses", "phone_numbers", "external_ids", "usernames", "web3_wallets", "organization_ids", "query", "email_address_query", "phone_number_query", "username_query", "name_query", "banned", "created_after", "created_before", "last_active_after", "last_active_before")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_IDS_FIELD_NUMBER: _ClassVar[int]
    USERNAMES_FIELD_NUMBER: _ClassVar[int]
    WEB3_WALLETS_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ADDRESS_QUERY_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_QUERY_FIELD_NUMBER: _ClassVar[int]
    USERNAME_QUERY_FIELD_NUMBER: _ClassVar[int]
    NAME_QUERY_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_AFTER_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    email_addresses: _containers.RepeatedScalarFieldContainer[str]
    phone_numbers: _containers.RepeatedScalarFieldContainer[str]
    external_ids: _containers.RepeatedScalarFieldContainer[str]
    usernames: _containers.RepeatedScalarFieldContainer[str]
    web3_wallets: _containers.RepeatedScalarFieldContainer[str]
    organization_ids: _containers.RepeatedScalarFieldContainer[str]
    query: str
    email_address_query: str
    phone_number_query: str
    username_query: str
    name_query: str
    banned: bool
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    last_active_after: _timestamp_pb2.Timestamp
    last_active_before: _timestamp_pb2.Timestamp
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ..., email_addresses: _Optional[_Iterable[str]] = ..., phone_numbers: _Optional[_Iterable[str]] = ..., external_ids: _Optional[_Iterable[str]] = ..., usernames: _Optional[_Iterable[str]] = ..., web3_wallets: _Optional[_Iterable[str]] = ..., organization_ids: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., email_address_query: _Optional[str] = ..., phone_number_query: _Optional[str] = ..., username_query: _Optional[str] = ..., name_query: _Optional[str] = ..., banned: _Optional[bool] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_active_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_active_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("filter", "order_by", "page_size", "max_users", "resume_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_USERS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: UserFilter
    order_by: str
    page_size: int
    max_users: int
    resume_token: str
    def __init__(self, filter: _Optional[_Union[UserFilter, _Mapping]] = ..., order_by: _Optional[str] = ..., page_size: _Optional[int] = ..., max_users: _Optional[int] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "resume_token")
    USERS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[User]
    resume_token: str
    def __init__(self, users: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class CountUsersRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: UserFilter
    def __init__(self, filter: _Optional[_Union[UserFilter, _Mapping]] = ...) -> None: ...

class CountUsersResponse(_message.Message):
    __slots__ = ("total_count",)
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    total_count: int
    def __init__(self, total_count: _Optional[int] = ...) -> None: ...

class UpdateUserMetadataRequest(_message.Message):
    __slots__ = ("user_id", "public_metadata", "private_metadata", "unsafe_metadata")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_METADATA_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_METADATA_FIELD_NUMBER: _ClassVar[int]
    UNSAFE_METADATA_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    public_metadata: _struct_pb2.Struct
    private_metadata: _struct_pb2.Struct
    unsafe_metadata: _struct_pb2.Struct
    def __init__(self, user_id: _Optional[str] = ..., public_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., private_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., unsafe_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateUserMetadataResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

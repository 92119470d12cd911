import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyBudget(_message.Message):
    __slots__ = ("amount", "period", "used", "remaining", "resets_at")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESETS_AT_FIELD_NUMBER: _ClassVar[int]
    amount: str
    period: str
    used: str
    remaining: str
    resets_at: _timestamp_pb2.Timestamp
    def __init__(self, amount: _Optional[str] = ..., period: _Optional[str] = ..., used: _Optional[str] = ..., remaining: _Optional[str] = ..., resets_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class KeyCredits(_message.Message):
    __slots__ = ("limit", "used", "remaining")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    limit: str
    used: str
    remaining: str
    def __init__(self, limit: _Optional[str] = ..., used: _Optional[str] = ..., remaining: _Optional[str] = ...) -> None: ...

class BudgetLimit(_message.Message):
    __slots__ = ("amount", "period")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    amount: str
    period: str
    def __init__(self, amount: _Optional[str] = ..., period: _Optional[str] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class StringMap(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, str]
    def __init__(self, values: _Optional[_Mapping[str, str]] = ...) -> None: ...

class IntList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "name", "prefix", "rpm", "concurrency", "credits", "credits_used", "admin", "revoked", "create_time", "models", "expires_at", "tpm", "budget", "scopes", "metadata", "alert_webhook", "alert_thresholds", "credit_status")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    RPM_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_USED_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ALERT_WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    prefix: str
    rpm: int
    concurrency: int
    credits: str
    credits_used: str
    admin: bool
    revoked: bool
    create_time: _timestamp_pb2.Timestamp
    models: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    tpm: int
    budget: KeyBudget
    scopes: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    alert_webhook: str
    alert_thresholds: _containers.RepeatedScalarFieldContainer[int]
    credit_status: KeyCredits
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., prefix: _Optional[str] = ..., rpm: _Optional[int] = ..., concurrency: _Optional[int] = ..., credits: _Optional[str] = ..., credits_used: _Optional[str] = ..., admin: _Optional[bool] = ..., revoked: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., models: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tpm: _Optional[int] = ..., budget: _Optional[_Union[KeyBudget, _Mapping]] = ..., scopes: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., alert_webhook: _Optional[str] = ..., alert_thresholds: _Optional[_Iterable[int]] = ..., credit_status: _Optional[_Union[KeyCredits, _Mapping]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("name", "rpm", "concurrency", "credits", "admin", "tpm", "budget", "models", "expires_at", "expires_in", "scopes", "metadata", "alert_webhook", "alert_thresholds")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    RPM_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ALERT_WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    rpm: int
    concurrency: int
    credits: str
    admin: bool
    tpm: int
    budget: BudgetLimit
    models: _containers.RepeatedScalarFieldContainer[str]
    expires_at: str
    expires_in: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    alert_webhook: str
    alert_thresholds: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., rpm: _Optional[int] = ..., concurrency: _Optional[int] = ..., credits: _Optional[str] = ..., admin: _Optional[bool] = ..., tpm: _Optional[int] = ..., budget: _Optional[_Union[BudgetLimit, _Mapping]] = ..., models: _Optional[_Iterable[str]] = ..., expires_at: _Optional[str] = ..., expires_in: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., alert_webhook: _Optional[str] = ..., alert_thresholds: _Optional[_Iterable[int]] = ...) -> None: ...

class CreateKeyResponse(_message.Message):
    __slots__ = ("key", "secret", "webhook_secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    webhook_secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ..., webhook_secret: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("include_revoked", "limit", "after")
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    include_revoked: bool
    limit: int
    after: str
    def __init__(self, include_revoked: _Optional[bool] = ..., limit: _Optional[int] = ..., after: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys", "has_more", "next")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    has_more: bool
    next: str
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., has_more: _Optional[bool] = ..., next: _Optional[str] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class UpdateKeyRequest(_message.Message):
    __slots__ = ("id", "name", "rpm", "concurrency", "credits", "tpm", "budget", "clear_budget", "models", "scopes", "metadata", "expires_at", "expires_in", "alert_webhook", "alert_thresholds")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RPM_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    CLEAR_BUDGET_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    ALERT_WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    rpm: int
    concurrency: int
    credits: str
    tpm: int
    budget: BudgetLimit
    clear_budget: bool
    models: StringList
    scopes: StringList
    metadata: StringMap
    expires_at: str
    expires_in: str
    alert_webhook: str
    alert_thresholds: IntList
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., rpm: _Optional[int] = ..., concurrency: _Optional[int] = ..., credits: _Optional[str] = ..., tpm: _Optional[int] = ..., budget: _Optional[_Union[BudgetLimit, _Mapping]] = ..., clear_budget: _Optional[bool] = ..., models: _Optional[_Union[StringList, _Mapping]] = ..., scopes: _Optional[_Union[StringList, _Mapping]] = ..., metadata: _Optional[_Union[StringMap, _Mapping]] = ..., expires_at: _Optional[str] = ..., expires_in: _Optional[str] = ..., alert_webhook: _Optional[str] = ..., alert_thresholds: _Optional[_Union[IntList, _Mapping]] = ...) -> None: ...

class UpdateKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class GetKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class GetKeyByIdRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetKeyByIdResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ("id", "grace_seconds", "grace")
    ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GRACE_FIELD_NUMBER: _ClassVar[int]
    id: str
    grace_seconds: float
    grace: str
    def __init__(self, id: _Optional[str] = ..., grace_seconds: _Optional[float] = ..., grace: _Optional[str] = ...) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

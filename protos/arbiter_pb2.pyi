from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Feedback(_message.Message):
    __slots__ = ("decision_id", "reward", "truth_json", "correction", "feedback_token")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    TRUTH_JSON_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    reward: float
    truth_json: str
    correction: bool
    feedback_token: str
    def __init__(self, decision_id: _Optional[str] = ..., reward: _Optional[float] = ..., truth_json: _Optional[str] = ..., correction: _Optional[bool] = ..., feedback_token: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("deployment", "feedback")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    feedback: _containers.RepeatedCompositeFieldContainer[Feedback]
    def __init__(self, deployment: _Optional[str] = ..., feedback: _Optional[_Iterable[_Union[Feedback, _Mapping]]] = ...) -> None: ...

class FeedbackResult(_message.Message):
    __slots__ = ("decision_id", "status", "rewards")
    class RewardsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    status: str
    rewards: _containers.ScalarMap[str, float]
    def __init__(self, decision_id: _Optional[str] = ..., status: _Optional[str] = ..., rewards: _Optional[_Mapping[str, float]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FeedbackResult]
    def __init__(self, results: _Optional[_Iterable[_Union[FeedbackResult, _Mapping]]] = ...) -> None: ...

class GetDecisionRequest(_message.Message):
    __slots__ = ("decision_id",)
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    def __init__(self, decision_id: _Optional[str] = ...) -> None: ...

class DecisionRecord(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class ExplanationRecord(_message.Message):
    __slots__ = ("json", "pending")
    JSON_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    json: str
    pending: bool
    def __init__(self, json: _Optional[str] = ..., pending: _Optional[bool] = ...) -> None: ...

"""``POST /v1/chat/completions`` request and response bodies, both dialects in one model.

Mistral's fields (``random_seed``, ``safe_prompt``, ``prefix``, ``tool_choice: "any"``)
and OpenAI's (``seed``, ``max_completion_tokens``, ``stream_options``) are all
accepted; ``normalize`` folds them into one meaning. ``n`` (1..16) and OpenAI's
``logprobs`` / ``top_logprobs`` (0..20, only with ``logprobs: true``) are validated here;
a refusal is a 422 naming the field. Unknown fields are refused
(Mistral's spec forbids additional properties), so a typo never goes unnoticed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

MAX_N = 16
"""Most choices one request may ask for (``n``)."""
MAX_TOP_LOGPROBS = 20

Role = Literal["system", "developer", "user", "assistant", "tool"]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str | dict[str, Any]


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    type: str = "function"
    function: FunctionCall
    index: int | None = None


class Message(BaseModel):
    # OpenAI clients echo assistant fields such as ``refusal`` or ``audio``.
    model_config = ConfigDict(extra="ignore")
    role: Role
    content: str | list[ContentPart] | None = None
    prefix: bool = False
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: the same shape in Mistral's and OpenAI's APIs."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class NamedToolChoice(BaseModel):
    """``{"type": "function", "function": {"name": ...}}``: call this function."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function"] = "function"
    function: FunctionName


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    random_seed: int | None = Field(default=None, ge=0)
    seed: int | None = None
    top_k: int | None = Field(default=None, ge=0)
    min_tokens: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    """Choices to return (parallel sampling); the prompt is billed once."""
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    safe_prompt: bool = False
    response_format: ResponseFormat | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["auto", "none", "any", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Accepted for compatibility; they do not change generation.
    metadata: dict[str, Any] | None = None
    user: str | None = None
    store: bool | None = None
    prompt_cache_key: str | None = None
    prediction: dict[str, Any] | None = None
    prompt_mode: str | None = None
    service_tier: str | None = None
    prompt_logprobs: bool | None = None
    top_prompt_logprobs: int | None = Field(default=None, ge=0, le=20)
    guardrails: list[dict[str, Any]] | None = None
    reasoning_effort: str | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs requires logprobs: true")
        return value

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if self.stop is not None:
            stops = [self.stop] if isinstance(self.stop, str) else self.stop
            if len(stops) > 16:
                raise ValueError("stop accepts at most 16 sequences")
        if (
            self.min_tokens is not None
            and self.effective_max_tokens is not None
            and self.min_tokens > self.effective_max_tokens
        ):
            raise ValueError("min_tokens must not exceed max_tokens")
        return self

    @property
    def uses_openai_fields(self) -> bool:
        return (
            self.seed is not None
            or self.max_completion_tokens is not None
            or self.stream_options is not None
        )

    @property
    def engine_logprobs(self) -> int | None:
        """``SamplingParams.logprobs``: None unless asked, else the number of top tokens."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def effective_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens

    @property
    def effective_seed(self) -> int | None:
        return self.random_seed if self.random_seed is not None else self.seed

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    num_cached_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class ResponseFunctionCall(BaseModel):
    name: str
    arguments: str
    """JSON text, as both dialects return it."""


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunctionCall
    index: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ResponseToolCall] | None = None


class TopLogprob(BaseModel):
    """OpenAI's ``TopLogprob``; ``token_id`` as Mistral's SDK also reads it."""

    token: str
    logprob: float
    bytes: list[int] | None
    token_id: int


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None
    """Only present when the request asked (``logprobs: true``)."""


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


class StreamChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None
    """The delta's tokens, only when the request asked."""


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[StreamChoice]
    usage: Usage | None = None

"""Tools: the port, the registry, argument validation and the use cases that run them.

Tool authors (built-ins and plugins) need only `Tool`, `ToolOutput` and `ToolError`.
"""

from app.application.tools.execute import (
    MAX_BATCH_CALLS,
    ExecuteTool,
    ExecuteToolBatch,
    ToolCall,
    ToolCallResult,
    execution_status,
)
from app.application.tools.ports import (
    ExecutionContext,
    JsonValue,
    NoOpToolExecutionRecorder,
    NoOpToolRunObserver,
    Tool,
    ToolError,
    ToolExecutionRecord,
    ToolExecutionRecorder,
    ToolOutput,
    ToolRunObservation,
    ToolRunObserver,
)
from app.application.tools.registry import (
    ListTools,
    ToolRegistrationError,
    ToolRegistry,
    check_tool,
    describe_tool,
    openai_tool_definition,
)
from app.application.tools.schema import SchemaError, check_schema, validate_arguments

__all__ = [
    "MAX_BATCH_CALLS",
    "ExecuteTool",
    "ExecuteToolBatch",
    "ExecutionContext",
    "JsonValue",
    "ListTools",
    "NoOpToolExecutionRecorder",
    "NoOpToolRunObserver",
    "SchemaError",
    "Tool",
    "ToolCall",
    "ToolCallResult",
    "ToolError",
    "ToolExecutionRecord",
    "ToolExecutionRecorder",
    "ToolOutput",
    "ToolRegistrationError",
    "ToolRegistry",
    "ToolRunObservation",
    "ToolRunObserver",
    "check_schema",
    "check_tool",
    "describe_tool",
    "execution_status",
    "openai_tool_definition",
    "validate_arguments",
]

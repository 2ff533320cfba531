"""The agent's use cases, assembled once per process from the container's adapters."""

from __future__ import annotations

from dataclasses import dataclass

from app.application.agent.conversations import (
    CreateConversation,
    DeleteConversation,
    GetConversation,
    GetConversationWithRun,
    ListConversations,
    ListMessages,
    UpdateConversation,
)
from app.application.agent.ephemeral import RunServerTools
from app.application.agent.executions import ListToolExecutions
from app.application.agent.loop import AgentLoop
from app.application.agent.ports import AgentLimits, RunSignals
from app.application.agent.runs import CancelRun, PostMessage, SubmitApprovals
from app.application.llm.limits import AdmitChatCompletion
from app.application.llm.types import ModelCatalog, UsageRecorder
from app.application.llm.use_cases import CreateChatCompletion
from app.application.ports import AgentUnitOfWorkFactory
from app.application.tools import ExecuteTool, ToolRegistry, ToolRunObserver
from app.config import AgentSettings
from app.infrastructure.agent.adapters import (
    GatewayAgentModel,
    PersistentToolExecutionRecorder,
    RegistryToolRunner,
)
from app.infrastructure.ratelimit.resilient import RateLimiters
from app.infrastructure.security.clock import SystemClock


@dataclass(frozen=True)
class AgentServices:
    """Everything the agent endpoints call. One `RunSignals` and one `AgentLoop` per process:
    a cancel reaches a run this process drives at once."""

    signals: RunSignals
    loop: AgentLoop
    limits: AgentLimits
    heartbeat_seconds: float
    create_conversation: CreateConversation
    list_conversations: ListConversations
    get_conversation: GetConversation
    get_conversation_with_run: GetConversationWithRun
    update_conversation: UpdateConversation
    delete_conversation: DeleteConversation
    list_messages: ListMessages
    post_message: PostMessage
    submit_approvals: SubmitApprovals
    cancel_run: CancelRun
    list_tool_executions: ListToolExecutions
    run_server_tools: RunServerTools
    # The Tools API's ExecuteTool: every attempt goes to the audit trail.
    execute_tool: ExecuteTool


def agent_limits(settings: AgentSettings, catalog: ModelCatalog) -> AgentLimits:
    models = catalog.models()
    default_model = settings.default_model or (models[0].id if models else "demo")
    return AgentLimits(
        default_model=default_model,
        default_max_iterations=settings.max_iterations,
        max_iterations_limit=settings.max_iterations_limit,
        token_budget=settings.token_budget,
        max_tokens_per_turn=settings.max_tokens_per_turn,
        tool_timeout_seconds=settings.tool_timeout_seconds,
        status_poll_seconds=settings.status_poll_seconds,
    )


def build_agent_services(
    settings: AgentSettings,
    uow: AgentUnitOfWorkFactory,
    catalog: ModelCatalog,
    usage_recorder: UsageRecorder,
    tools: ToolRegistry,
    *,
    rate_limits: RateLimiters | None = None,
    default_max_tokens: int = 4096,
    tool_runs: ToolRunObserver | None = None,
) -> AgentServices:
    """`usage_recorder` is the gateway's (the agent's model calls are usage like any other).

    `tool_runs` hears of every tool call outcome exactly once: the loop reports its own
    (conversations, approvals, WebSocket, server tools), the Tools API's `ExecuteTool` its
    own; the runner's `ExecuteTool` inside the loop reports nothing (no double count)."""
    clock = SystemClock()
    limits = agent_limits(settings, catalog)
    chat = CreateChatCompletion(catalog, usage_recorder)
    admit = (
        AdmitChatCompletion(
            chat,
            rate_limits.api,
            api_keys=rate_limits.api_keys,
            users=rate_limits.users,
            default_max_tokens=default_max_tokens,
        )
        if rate_limits is not None
        else None
    )
    model = GatewayAgentModel(chat, catalog, admit)
    # The loop writes tool_executions itself (with run, conversation and approver).
    runner = RegistryToolRunner(tools, ExecuteTool(tools))
    signals = RunSignals()
    loop = AgentLoop(uow, model, runner, signals, clock, limits=limits, observer=tool_runs)
    return AgentServices(
        signals=signals,
        loop=loop,
        limits=limits,
        heartbeat_seconds=settings.heartbeat_seconds,
        create_conversation=CreateConversation(uow, runner, clock),
        list_conversations=ListConversations(uow),
        get_conversation=GetConversation(uow),
        get_conversation_with_run=GetConversationWithRun(uow),
        update_conversation=UpdateConversation(uow, clock),
        delete_conversation=DeleteConversation(uow),
        list_messages=ListMessages(uow),
        post_message=PostMessage(uow, loop, model, clock),
        submit_approvals=SubmitApprovals(uow, loop, clock),
        cancel_run=CancelRun(uow, signals, clock),
        list_tool_executions=ListToolExecutions(uow),
        run_server_tools=RunServerTools(model, runner, clock, limits=limits, observer=tool_runs),
        execute_tool=ExecuteTool(tools, recorder=PersistentToolExecutionRecorder(uow), observer=tool_runs),
    )

// Folds a turn's streamed events into what the playground shows: the live reply
// (content and reasoning token by token), tool steps as they start and finish,
// and the stored messages the stream hands back.

export const emptyTurn = () => ({ messageId: "", model: "", live: "", reasoning: "", steps: [], messages: [], done: false });

/** The next turn state after one SSE event (a oneof: exactly one key besides sequenceNumber). */
export function foldEvent(turn, event) {
  if (event.turnStarted) return { ...turn, messageId: event.turnStarted.messageId, model: event.turnStarted.model };
  if (event.inputMessage) return { ...turn, messages: [...turn.messages, event.inputMessage] };
  if (event.delta) {
    return { ...turn, live: turn.live + (event.delta.content || ""), reasoning: turn.reasoning + (event.delta.reasoning || "") };
  }
  if (event.toolCallStarted) {
    const s = event.toolCallStarted;
    // The model's text before a tool step belongs to that step; the next step streams afresh.
    return { ...turn, live: "", steps: [...turn.steps, { id: s.toolCallId, name: s.name, arguments: s.arguments, executor: s.executor, result: null }] };
  }
  if (event.toolCallCompleted) {
    const result = event.toolCallCompleted;
    const steps = turn.steps.map((s) => (s.id === result.toolCallId ? { ...s, result } : s));
    return { ...turn, steps, messages: [...turn.messages, result] };
  }
  if (event.assistantMessage) {
    return { ...turn, live: "", reasoning: "", done: true, messages: [...turn.messages, event.assistantMessage] };
  }
  return turn;
}

/** The client tool calls and approvals a REQUIRES_ACTION reply waits for. */
export function pendingActions(message) {
  if (!message || message.status !== "MESSAGE_STATUS_REQUIRES_ACTION") return { outputs: [], approvals: [] };
  const calls = message.toolCalls || [];
  return {
    approvals: calls.filter((c) => c.awaitingApproval),
    outputs: calls.filter((c) => !c.awaitingApproval && (c.executor || "client") === "client"),
  };
}

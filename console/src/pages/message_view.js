// One stored message, as the transcript and the playground show it: role, model,
// status, finish reason, tool calls and results with their executor, reasoning,
// usage, cost, time to first token, attempts and fallbacks, and the error's reason.
// An assistant's reply and its reasoning are sanitized Markdown (../markdown.js);
// every other string (user input, tool arguments and results, refusals, errors) is
// a text child, which Preact sets with textContent.
import { html, enumText, fmtInt, fmtUsd, fmtTime, Badge } from "../ui.js";
import { Markdown } from "../markdown.js";

/** The ErrorInfo reason of a google.rpc.Status, if any. */
export function errorReason(status) {
  const info = (status?.details || []).find((d) => String(d["@type"] || "").endsWith("ErrorInfo"));
  return info?.reason || "";
}

const STATUS_KIND = { COMPLETED: "ok", FAILED: "bad", CANCELLED: "warn", REQUIRES_ACTION: "warn", IN_PROGRESS: "info" };

function ToolCalls({ calls }) {
  if (!calls?.length) return null;
  return html`<ul class="tool-calls">${calls.map(
    (call) => html`<li class="tool-call" data-tool=${call.function?.name}>
      <span class="label">tool call</span> <code>${call.function?.name}</code>
      ${call.executor && html` <${Badge} kind="info">${call.executor}<//>`}
      ${call.awaitingApproval && html` <${Badge} kind="warn">awaiting approval<//>`}
      <pre class="args">${call.function?.arguments}</pre>
      <small class="muted">${call.id}</small>
    </li>`,
  )}</ul>`;
}

function Meta({ message }) {
  const usage = message.usage || {};
  const bits = [];
  if (message.model) bits.push(["model", message.model]);
  if (message.finishReason) bits.push(["finish", message.finishReason]);
  if (message.step) bits.push(["step", message.step]);
  if (Number(usage.totalTokens)) {
    bits.push(["tokens", `${fmtInt(usage.promptTokens)} in / ${fmtInt(usage.completionTokens)} out`]);
    if (Number(usage.reasoningTokens)) bits.push(["reasoning tokens", fmtInt(usage.reasoningTokens)]);
    bits.push(["cost", fmtUsd(usage.costUsd)]);
  }
  if (Number(message.timeToFirstTokenMs)) bits.push(["TTFT", `${message.timeToFirstTokenMs} ms`]);
  if (Number(message.durationMs)) bits.push(["duration", `${message.durationMs} ms`]);
  if (message.upstreamRequestId) bits.push(["upstream id", message.upstreamRequestId]);
  return html`<dl class="meta">${bits.map(([k, v]) => html`<div><dt>${k}</dt><dd>${v}</dd></div>`)}</dl>`;
}

export function MessageView({ message }) {
  const role = enumText(message.role, "ROLE_");
  const status = String(message.status || "").replace("MESSAGE_STATUS_", "");
  const attempts = message.attempts || [];
  const reason = errorReason(message.error);
  return html`<article class=${`message role-${role}`} data-status=${status} aria-label=${`${role} message ${message.sequence || ""}`}>
    <header>
      <strong class="role">${role}</strong>
      ${role === "tool" && html` <code>${message.name}</code> result${message.executor && html` <${Badge} kind="info">${message.executor}<//>`}`}
      ${status && status !== "COMPLETED" && html` <${Badge} kind=${STATUS_KIND[status]}>${status.toLowerCase().replace("_", " ")}<//>`}
      <span class="muted seq">#${message.sequence} · ${fmtTime(message.createTime)}</span>
    </header>
    ${message.reasoningContent && html`<details class="reasoning"><summary>Reasoning</summary><${Markdown} text=${message.reasoningContent} /></details>`}
    ${message.content &&
    (role === "assistant" ? html`<${Markdown} class="content" text=${message.content} />` : html`<p class="text content">${message.content}</p>`)}
    ${message.refusal && html`<p class="text refusal">Refused: ${message.refusal}</p>`}
    ${role === "tool" && html`<small class="muted">for ${message.toolCallId}</small>`}
    <${ToolCalls} calls=${message.toolCalls} />
    ${message.error?.message &&
    html`<div class="error" role="note"><strong>${reason || `code ${message.error.code}`}</strong> ${message.error.message}</div>`}
    ${attempts.length > 1 &&
    html`<ol class="attempts" aria-label="attempts">${attempts.map(
      (a) => html`<li><code>${a.model}</code> ${a.errorReason ? html`<${Badge} kind="bad">${a.errorReason}<//>` : html`<${Badge} kind="ok">answered<//>`} ${a.durationMs} ms</li>`,
    )}</ol>`}
    <${Meta} message=${message} />
  </article>`;
}

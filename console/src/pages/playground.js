// The playground: chat live with an agent or a model. It creates an ordinary
// conversation and session through the API, streams each turn token by token,
// shows tool steps as they happen, takes client tool outputs and approvals by
// hand, and cancels (CancelTurn on the turn's message id, and aborting the fetch).
import { useEffect, useRef, useState } from "preact/hooks";
import { get, post, stream } from "../api.js";
import { html, Page, ErrorBox, useLoad, Badge } from "../ui.js";
import { MessageView } from "./message_view.js";
import { Markdown } from "../markdown.js";
import { ActionForm } from "./action_form.js";
import { emptyTurn, foldEvent, pendingActions } from "./turn_stream.js";

export function PlaygroundPage({ search }) {
  const [agents] = useLoad(() => get("/agents", { pageSize: 100 }), []);
  const [catalog] = useLoad(() => get("/catalog/models"), []);
  const [target, setTarget] = useState(search.get("agent") ? `agent:${search.get("agent")}` : "");
  const [sessionId, setSessionId] = useState(search.get("session") || "");
  const [history, setHistory] = useState([]);
  const [turn, setTurn] = useState(null);
  const [text, setText] = useState("");
  const [reasoning, setReasoning] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const abort = useRef(null);
  const end = useRef(null);

  // The stored messages, as any program would read them (ListMessages): after each
  // turn they replace what the stream showed, so the step messages a stream does not
  // carry (the assistant's tool calls) appear too. A playground session is short.
  const refresh = async (id) => {
    const messages = [];
    let token = "";
    for (let pages = 0; pages < 20; pages++) {
      const page = await get(`/sessions/${id}/messages`, { pageSize: 100, pageToken: token });
      messages.push(...(page.messages || []));
      token = page.nextPageToken;
      if (!token) break;
    }
    setHistory(messages);
  };
  useEffect(() => {
    const opened = search.get("session"); // continuing a stored session from its transcript
    if (opened) refresh(opened).catch(setError);
  }, []);
  useEffect(() => end.current?.scrollIntoView({ block: "end" }), [turn, history]);
  useEffect(() => {
    if (!target && agents?.agents?.length) setTarget(`agent:${agents.agents[0].id}`);
    else if (!target && catalog?.models?.length) setTarget(`model:${catalog.models[0].id}`);
  }, [agents, catalog]);

  const ensureSession = async () => {
    if (sessionId) return sessionId;
    const [kind, value] = [target.slice(0, target.indexOf(":")), target.slice(target.indexOf(":") + 1)];
    const conversation = await post("/conversations", { title: `Playground ${new Date().toISOString().slice(0, 16)}` });
    const session = { conversationId: conversation.conversation.id };
    if (kind === "agent") session.agentId = value;
    else session.overrides = { model: value };
    const created = await post("/sessions", session);
    setSessionId(created.session.id);
    return created.session.id;
  };

  const run = async (path, body) => {
    setError(null);
    setBusy(true);
    const controller = new AbortController();
    abort.current = controller;
    let state = emptyTurn();
    let id = "";
    setTurn(state);
    try {
      id = await ensureSession();
      await stream(`/sessions/${id}:${path}`, body, (event) => {
        state = foldEvent(state, event);
        setTurn(state);
      }, controller.signal);
    } catch (failure) {
      if (failure.name !== "AbortError") setError(failure);
    } finally {
      abort.current = null;
      setBusy(false);
      setHistory((h) => [...h, ...state.messages]);
      setTurn(state.done ? null : { ...state, stopped: true });
      if (id) await refresh(id).catch(setError);
    }
  };

  const send = (event) => {
    event.preventDefault();
    if (!text.trim() || busy) return;
    const options = reasoning ? { reasoningEffort: reasoning } : undefined;
    run("sendStreamingMessage", { messages: [{ role: "ROLE_USER", content: text }], ...(options && { options }) });
    setText("");
  };

  const cancel = async () => {
    const messageId = turn?.messageId;
    abort.current?.abort();
    if (messageId && sessionId) {
      // Best effort: the server also cancels a turn whose caller went away.
      post(`/sessions/${sessionId}/messages/${messageId}:cancel`, {}).catch(() => {});
    }
  };

  const reset = () => {
    setSessionId("");
    setHistory([]);
    setTurn(null);
    setError(null);
  };

  const last = history[history.length - 1];
  const pending = busy ? { outputs: [], approvals: [] } : pendingActions(last);
  const targets = [
    ...(agents?.agents || []).map((a) => [`agent:${a.id}`, `Agent: ${a.displayName || a.key}`]),
    ...(catalog?.models || []).map((m) => [`model:${m.id}`, `Model: ${m.id}`]),
  ];
  const actions = html`${sessionId && html`<a class="button" href=${`#/sessions/${sessionId}`}>Open transcript</a>`}
    <button onClick=${reset}>New chat</button>`;
  return html`<${Page} title="Playground" actions=${actions}>
    <div class="toolbar">
      <label for="pg-target">Chat with</label>
      <select id="pg-target" value=${target} disabled=${Boolean(sessionId)} onChange=${(e) => setTarget(e.currentTarget.value)}>
        ${targets.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
      </select>
      <label for="pg-reasoning">Reasoning effort</label>
      <select id="pg-reasoning" value=${reasoning} onChange=${(e) => setReasoning(e.currentTarget.value)}>
        <option value="">default</option><option value="low">low</option><option value="medium">medium</option><option value="high">high</option>
      </select>
      ${sessionId && html`<span class="muted">session <code>${sessionId}</code></span>`}
    </div>
    <div class="chat" aria-live="polite">
      ${history.map((m) => html`<${MessageView} key=${m.id} message=${m} />`)}
      ${turn && html`<${LiveTurn} turn=${turn} />`}
      <div ref=${end}></div>
    </div>
    <${ErrorBox} error=${error} />
    ${(pending.outputs.length > 0 || pending.approvals.length > 0) &&
    html`<${ActionForm} pending=${pending} onSubmit=${(body) => run("submitToolOutputs", body)} />`}
    <form class="composer" onSubmit=${send}>
      <label for="pg-input" class="sr-only">Message</label>
      <textarea id="pg-input" rows="3" placeholder="Message (Ctrl+Enter to send)" value=${text}
        onInput=${(e) => setText(e.currentTarget.value)}
        onKeyDown=${(e) => e.key === "Enter" && (e.ctrlKey || e.metaKey) && send(e)}></textarea>
      <div class="composer-actions">
        <button type="submit" disabled=${busy || !target || !text.trim()}>Send</button>
        ${busy && html`<button type="button" class="danger" onClick=${cancel}>Cancel</button>`}
      </div>
    </form>
  <//>`;
}

function LiveTurn({ turn }) {
  return html`<section class="live" aria-label="reply in progress">
    ${turn.steps.map(
      (step) => html`<div class="step" data-tool=${step.name}>
        <span class="label">tool step</span> <code>${step.name}</code> <${Badge} kind="info">${step.executor}<//>
        <pre class="args">${step.arguments}</pre>
        ${step.result ? html`<p class="text">→ ${step.result.content}</p>` : html`<p class="muted">running…</p>`}
      </div>`,
    )}
    ${turn.reasoning && html`<details class="reasoning" open><summary>Reasoning</summary><${Markdown} text=${turn.reasoning} live /></details>`}
    <${Markdown} class="content streaming" text=${turn.live} live />
    ${turn.stopped && html`<p class="muted">Stopped.</p>`}
  </section>`;
}

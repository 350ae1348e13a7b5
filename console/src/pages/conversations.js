// Conversations and the sessions in each, paged by the API's cursors.
import { useState } from "preact/hooks";
import { get } from "../api.js";
import { html, Page, ErrorBox, Loading, useLoad, fmtTime, Badge, More, enumText } from "../ui.js";

/** A list that appends the next page on demand. */
function usePaged(path, key, params, deps) {
  const [extra, setExtra] = useState({ items: [], token: "" });
  const [data, error, loading, reload] = useLoad(async () => {
    setExtra({ items: [], token: "" });
    return get(path, { pageSize: 50, ...params });
  }, deps);
  const items = [...(data?.[key] || []), ...extra.items];
  const token = extra.token || (extra.items.length ? "" : data?.nextPageToken);
  const more = async () => {
    const page = await get(path, { pageSize: 50, ...params, pageToken: token });
    setExtra({ items: [...extra.items, ...(page[key] || [])], token: page.nextPageToken || "" });
  };
  return { items, token, more, error, loading, reload };
}

export function ConversationsPage() {
  const [text, setText] = useState("");
  const [showDeleted, setShowDeleted] = useState(false);
  const list = usePaged("/conversations", "conversations", { showDeleted }, [showDeleted]);
  // The API lists conversations without a filter; the title filter narrows the loaded pages.
  const needle = text.trim().toLowerCase();
  const shown = list.items.filter((c) => !needle || (c.title || "").toLowerCase().includes(needle) || c.id.includes(needle));
  const [sessionId, setSessionId] = useState("");
  // ListSessions is per conversation, and a session may have none: open any session by its id.
  const openSession = (event) => {
    event.preventDefault();
    if (sessionId.trim()) location.hash = `#/sessions/${sessionId.trim()}`;
  };
  return html`<${Page} title="Conversations">
    <form class="toolbar" onSubmit=${openSession}>
      <label for="open-session">Open a session by id</label>
      <input id="open-session" value=${sessionId} onInput=${(e) => setSessionId(e.currentTarget.value)} />
      <button type="submit">Open</button>
    </form>
    <div class="toolbar">
      <label for="conv-filter">Filter loaded by title or id</label>
      <input id="conv-filter" value=${text} onInput=${(e) => setText(e.currentTarget.value)} />
      <label class="check"><input type="checkbox" checked=${showDeleted} onChange=${(e) => setShowDeleted(e.currentTarget.checked)} /> Show deleted</label>
    </div>
    <${ErrorBox} error=${list.error} />
    <${Loading} when=${list.loading} />
    <div class="table-wrap"><table>
      <thead><tr><th>Title</th><th>Id</th><th>Created</th><th>Updated</th></tr></thead>
      <tbody>${shown.map(
        (c) => html`<tr class=${c.deleteTime ? "deleted" : ""}>
          <td><a href=${`#/conversations/${c.id}`}>${c.title || "(untitled)"}</a>${c.deleteTime && html` <${Badge} kind="bad">deleted<//>`}</td>
          <td><code>${c.id}</code></td><td>${fmtTime(c.createTime)}</td><td>${fmtTime(c.updateTime)}</td></tr>`,
      )}</tbody>
    </table></div>
    ${!list.loading && !shown.length && html`<p class="muted">No conversations.</p>`}
    <${More} token=${list.token} onMore=${list.more} />
  <//>`;
}

export function SessionsPage({ id }) {
  const [conversation] = useLoad(() => get(`/conversations/${id}`), [id]);
  const [status, setStatus] = useState("");
  const list = usePaged(`/conversations/${id}/sessions`, "sessions", {}, [id]);
  const shown = list.items.filter((s) => !status || s.status === status);
  return html`<${Page} title=${`Conversation ${conversation?.conversation?.title || id}`}>
    <div class="toolbar">
      <label for="session-status">Status</label>
      <select id="session-status" value=${status} onChange=${(e) => setStatus(e.currentTarget.value)}>
        <option value="">any</option><option value="SESSION_STATUS_ACTIVE">active</option><option value="SESSION_STATUS_ENDED">ended</option>
      </select>
    </div>
    <${ErrorBox} error=${list.error} />
    <${Loading} when=${list.loading} />
    <div class="table-wrap"><table>
      <thead><tr><th>Session</th><th>Agent (revision)</th><th>Model</th><th>Status</th><th>Created</th></tr></thead>
      <tbody>${shown.map(
        (s) => html`<tr>
          <td><a href=${`#/sessions/${s.id}`}><code>${s.id}</code></a></td>
          <td>${s.agentId ? html`<a href=${`#/agents/${s.agentId}`}><code>${s.agentId.slice(0, 8)}</code></a> (${s.agentRevision})` : "none"}</td>
          <td>${s.effectiveSettings?.model}</td>
          <td>${enumText(s.status, "SESSION_STATUS_")}</td><td>${fmtTime(s.createTime)}</td></tr>`,
      )}</tbody>
    </table></div>
    <${More} token=${list.token} onMore=${list.more} />
  <//>`;
}

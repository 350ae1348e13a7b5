// A session's transcript: every stored message, a page of 100 at a time (a
// 1,000-message session renders ten cheap pages; CSS content-visibility skips
// laying out the cards off screen), with export in the API's three formats.
import { useState } from "preact/hooks";
import { get } from "../api.js";
import { html, Page, ErrorBox, Loading, useLoad, download, More, enumText } from "../ui.js";
import { MessageView } from "./message_view.js";

const PAGE = 100;
const FORMATS = [
  ["EXPORT_FORMAT_MARKDOWN", "Markdown", "md"],
  ["EXPORT_FORMAT_JSONL", "JSONL", "jsonl"],
  ["EXPORT_FORMAT_OPENAI_JSON", "OpenAI JSON", "json"],
];

export function TranscriptPage({ id }) {
  const [session, sessionError] = useLoad(() => get(`/sessions/${id}`), [id]);
  const [extra, setExtra] = useState({ messages: [], token: "" });
  const [role, setRole] = useState("");
  const [status, setStatus] = useState("");
  // The API filters (AIP-160 over role and status), so paging stays exact.
  const filter = [role && `role = "${role}"`, status && `status = "${status}"`].filter(Boolean).join(" AND ");
  const [exportError, setExportError] = useState(null);
  const [data, error, loading] = useLoad(async () => {
    setExtra({ messages: [], token: "" });
    return get(`/sessions/${id}/messages`, { pageSize: PAGE, filter });
  }, [id, filter]);
  const messages = [...(data?.messages || []), ...extra.messages];
  const token = extra.token || (extra.messages.length ? "" : data?.nextPageToken);
  const more = async () => {
    const page = await get(`/sessions/${id}/messages`, { pageSize: PAGE, filter, pageToken: token });
    setExtra({ messages: [...extra.messages, ...(page.messages || [])], token: page.nextPageToken || "" });
  };
  const exportAs = async (format, ext) => {
    setExportError(null);
    try {
      const result = await get(`/sessions/${id}:export`, { format });
      download(`session-${id}.${ext}`, result.contentType || "text/plain", result.content || "");
    } catch (failure) {
      setExportError(failure);
    }
  };
  const s = session?.session;
  const actions = html`${FORMATS.map(
    ([format, label, ext]) => html`<button onClick=${() => exportAs(format, ext)}>Export ${label}</button>`,
  )}`;
  return html`<${Page} title="Transcript" actions=${actions}>
    ${s &&
    html`<p class="muted">Session <code>${s.id}</code> · ${enumText(s.status, "SESSION_STATUS_")} · model ${s.effectiveSettings?.model}
      ${s.agentId && html` · agent <a href=${`#/agents/${s.agentId}`}>revision ${s.agentRevision}</a>`}
      ${s.conversationId && html` · <a href=${`#/conversations/${s.conversationId}`}>conversation</a>`}
      ${" · "}<a href=${`#/playground?session=${s.id}`}>continue in playground</a></p>`}
    <div class="toolbar">
      <label for="role-filter">Role</label>
      <select id="role-filter" value=${role} onChange=${(e) => setRole(e.currentTarget.value)}>
        <option value="">all</option>
        ${["user", "assistant", "tool", "system"].map((r) => html`<option value=${r}>${r}</option>`)}
      </select>
      <label for="status-filter">Status</label>
      <select id="status-filter" value=${status} onChange=${(e) => setStatus(e.currentTarget.value)}>
        <option value="">all</option>
        ${["completed", "failed", "cancelled", "requires_action", "in_progress"].map((v) => html`<option value=${v}>${v.replace("_", " ")}</option>`)}
      </select>
      <span class="muted">${messages.length} loaded${token ? ", more on the server" : ""}</span>
    </div>
    <${ErrorBox} error=${sessionError || error || exportError} />
    <${Loading} when=${loading} />
    <div class="transcript">${messages.map((m) => html`<${MessageView} key=${m.id} message=${m} />`)}</div>
    <${More} token=${token} onMore=${more} />
  <//>`;
}

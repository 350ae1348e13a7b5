// An agent's revisions, and a field-by-field diff between any two of them.
import { useState } from "preact/hooks";
import { get } from "../api.js";
import { html, ErrorBox, useLoad, fmtTime } from "../ui.js";

const IGNORED = new Set(["createTime", "updateTime", "etag", "revision", "deleteTime", "expireTime"]);

/** The fields whose values differ between two agents: [[field, before, after]]. */
export function agentDiff(a, b) {
  const fields = [...new Set([...Object.keys(a || {}), ...Object.keys(b || {})])].filter((f) => !IGNORED.has(f)).sort();
  const show = (v) => (v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v, null, 2));
  return fields.map((f) => [f, show(a?.[f]), show(b?.[f])]).filter(([, x, y]) => x !== y);
}

export function RevisionDiff({ agentId, current }) {
  const [data, error] = useLoad(() => get(`/agents/${agentId}/revisions`, { pageSize: 100 }), [agentId, current]);
  // Oldest first, whatever order the page came in.
  const revisions = [...(data?.revisions || [])].sort((x, y) => Number(x.revision) - Number(y.revision));
  const [left, setLeft] = useState("");
  const [right, setRight] = useState("");
  const byNumber = (n) => revisions.find((r) => String(r.revision) === String(n));
  const a = byNumber(left || (revisions.length > 1 ? revisions[revisions.length - 2]?.revision : ""));
  const b = byNumber(right || current);
  const pick = (value, onChange, id, label) => html`<label for=${id}>${label}</label>
    <select id=${id} value=${value} onChange=${(e) => onChange(e.currentTarget.value)}>
      <option value="">(default)</option>
      ${revisions.map((r) => html`<option value=${r.revision}>${r.revision} · ${fmtTime(r.createTime)}</option>`)}
    </select>`;
  return html`<section aria-labelledby="revisions-title">
    <h2 id="revisions-title">Revisions</h2>
    <${ErrorBox} error=${error} />
    <div class="toolbar">${pick(left, setLeft, "rev-a", "From")} ${pick(right, setRight, "rev-b", "To")}</div>
    ${a && b
      ? html`<div class="table-wrap"><table class="diff">
          <caption>Revision ${a.revision} → ${b.revision}</caption>
          <thead><tr><th>Field</th><th>Before</th><th>After</th></tr></thead>
          <tbody>${agentDiff(a.agent, b.agent).map(
            ([field, x, y]) => html`<tr><th scope="row">${field}</th><td><pre class="del">${x}</pre></td><td><pre class="ins">${y}</pre></td></tr>`,
          )}</tbody></table></div>`
      : html`<p class="muted">Only one revision so far.</p>`}
  </section>`;
}

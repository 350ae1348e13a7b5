// Agents: the list with an AIP-160 filter, soft delete and undelete (AIP-164).
import { useState } from "preact/hooks";
import { get, post, del } from "../api.js";
import { html, Page, ErrorBox, Loading, useLoad, fmtTime, Badge, More } from "../ui.js";

export function AgentsPage({ role }) {
  const [filter, setFilter] = useState("");
  const [applied, setApplied] = useState("");
  const [showDeleted, setShowDeleted] = useState(false);
  const [extra, setExtra] = useState({ agents: [], token: "" });
  const [actionError, setActionError] = useState(null);
  const [data, error, loading, reload] = useLoad(async () => {
    setExtra({ agents: [], token: "" });
    return get("/agents", { filter: applied, showDeleted, pageSize: 50 });
  }, [applied, showDeleted]);
  const agents = [...(data?.agents || []), ...extra.agents];
  const token = extra.token || data?.nextPageToken;
  const more = async () => {
    const page = await get("/agents", { filter: applied, showDeleted, pageSize: 50, pageToken: token });
    setExtra({ agents: [...extra.agents, ...page.agents], token: page.nextPageToken || "" });
  };
  const act = async (fn) => {
    setActionError(null);
    try {
      await fn();
      reload();
    } catch (failure) {
      setActionError(failure);
    }
  };
  const actions = role.operator ? html`<a class="button" href="#/agents/new">New agent</a>` : null;
  return html`<${Page} title="Agents" actions=${actions}>
    <form class="toolbar" onSubmit=${(e) => (e.preventDefault(), setApplied(filter))}>
      <label for="agent-filter">Filter (AIP-160)</label>
      <input id="agent-filter" placeholder='key = "support" OR default_model = "gpt-4o-mini"'
        value=${filter} onInput=${(e) => setFilter(e.currentTarget.value)} />
      <button type="submit">Apply</button>
      <label class="check"><input type="checkbox" checked=${showDeleted}
        onChange=${(e) => setShowDeleted(e.currentTarget.checked)} /> Show deleted</label>
    </form>
    <${ErrorBox} error=${error || actionError} />
    <${Loading} when=${loading} />
    <div class="table-wrap"><table>
      <thead><tr><th>Key</th><th>Name</th><th>Model</th><th>Tools</th><th>Revision</th><th>Updated</th><th></th></tr></thead>
      <tbody>
        ${agents.map(
          (agent) => html`<tr class=${agent.deleteTime ? "deleted" : ""}>
            <td><a href=${`#/agents/${agent.id}`}>${agent.key}</a></td>
            <td>${agent.displayName}</td>
            <td>${agent.defaultModel}${(agent.fallbackModels || []).length ? ` → ${agent.fallbackModels.join(" → ")}` : ""}
              ${(agent.unsupportedModels || []).map(
                (model) => html` <${Badge} kind="warn" title="not in the model catalog">unsupported: ${model}<//>`,
              )}</td>
            <td>${[...(agent.tools || []).map((t) => t.function?.name), ...(agent.builtinTools || [])].join(", ")}</td>
            <td>${agent.revision}</td>
            <td>${agent.deleteTime ? html`<${Badge} kind="bad">deleted ${fmtTime(agent.deleteTime)}<//>` : fmtTime(agent.updateTime)}</td>
            <td>${role.operator &&
              (agent.deleteTime
                ? html`<button onClick=${() => act(() => post(`/agents/${agent.id}:undelete`))}>Undelete</button>`
                : html`<button class="danger" onClick=${() => act(() => del(`/agents/${agent.id}`))}>Delete</button>`)}</td>
          </tr>`,
        )}
      </tbody>
    </table></div>
    ${!loading && !agents.length && html`<p class="muted">No agents.</p>`}
    <${More} token=${token} onMore=${more} />
  <//>`;
}

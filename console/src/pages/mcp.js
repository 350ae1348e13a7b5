// MCP servers (operators): each server, its tools with their definition hashes,
// and which of them are approved or changed since approval.
import { useState } from "preact/hooks";
import { get, post } from "../api.js";
import { html, Page, ErrorBox, Loading, useLoad, fmtTime, Badge, enumText, Json } from "../ui.js";

function Tools({ server, onChanged }) {
  const [data, error, , reload] = useLoad(() => get(`/mcpServers/${server.id}/tools`), [server.id]);
  const [actionError, setActionError] = useState(null);
  // The hash the operator saw goes along, so a definition changed since is refused.
  const approve = async (tool) => {
    setActionError(null);
    try {
      await post(`/mcpServers/${server.id}/tools:approve`, { toolNames: [tool.name], definitionHashes: { [tool.name]: tool.definitionHash } });
      reload();
      onChanged();
    } catch (failure) {
      setActionError(failure);
    }
  };
  return html`<div>
    <${ErrorBox} error=${error || actionError} />
    <div class="table-wrap"><table>
      <thead><tr><th>Tool</th><th>State</th><th>Definition hash</th><th>Input schema</th><th></th></tr></thead>
      <tbody>${(data?.tools || []).map(
        (t) => html`<tr><td><code>${t.name}</code><br /><small>${t.description}</small></td>
          <td><${Badge} kind=${t.state === "MCP_TOOL_STATE_APPROVED" ? "ok" : "warn"}>${enumText(t.state, "MCP_TOOL_STATE_")}<//></td>
          <td><code>${t.definitionHash}</code></td>
          <td><details><summary>schema</summary><${Json} value=${t.inputSchema} /></details></td>
          <td>${t.state !== "MCP_TOOL_STATE_APPROVED" && html`<button onClick=${() => approve(t)}>Approve</button>`}</td></tr>`,
      )}</tbody>
    </table></div>
  </div>`;
}

export function McpPage() {
  const [data, error, loading, reload] = useLoad(() => get("/mcpServers", { pageSize: 100 }), []);
  const [open, setOpen] = useState("");
  return html`<${Page} title="MCP servers">
    <${ErrorBox} error=${error} />
    <${Loading} when=${loading} />
    ${data && !(data.mcpServers || []).length && html`<p class="muted">No MCP servers registered (CreateMcpServer: POST /agentapi/v1/mcpServers).</p>`}
    ${(data?.mcpServers || []).map(
      (s) => html`<section class="card">
        <h2>${s.displayName || s.id}</h2>
        <p class="muted"><code>${s.id}</code> · ${enumText(s.transport, "MCP_TRANSPORT_")} · ${s.url || `${s.command} ${(s.args || []).join(" ")}`}
          ${" · "}tools discovered ${fmtTime(s.toolsDiscoverTime) || "never"}</p>
        <p>Approved: ${(s.approvedTools || []).map((t) => html`<code title=${t.definitionHash}>${t.name}</code> `)}</p>
        <button aria-expanded=${open === s.id} onClick=${() => setOpen(open === s.id ? "" : s.id)}>${open === s.id ? "Hide tools" : "Show tools"}</button>
        ${open === s.id && html`<${Tools} server=${s} onChanged=${reload} />`}
      </section>`,
    )}
  <//>`;
}

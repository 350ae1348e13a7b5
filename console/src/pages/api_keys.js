// API keys (admins: their tenant's; operators: any tenant's): list, create, revoke.
// A new key's secret is shown once, as the API returns it once.
import { useState } from "preact/hooks";
import { get, post } from "../api.js";
import { html, Page, ErrorBox, Loading, useLoad, fmtTime, Badge, enumText } from "../ui.js";

export function ApiKeysPage({ role }) {
  const [tenant, setTenant] = useState("");
  const [tenantDraft, setTenantDraft] = useState("");
  const [data, error, loading, reload] = useLoad(() => get("/apiKeys", { tenantId: tenant, pageSize: 100 }), [tenant]);
  const [form, setForm] = useState({ displayName: "", scope: "API_KEY_SCOPE_CLIENT", tenantId: "" });
  const [secret, setSecret] = useState("");
  const [actionError, setActionError] = useState(null);
  const set = (field) => (e) => setForm({ ...form, [field]: e.currentTarget.value });
  const act = async (fn) => {
    setActionError(null);
    try {
      await fn();
      reload();
    } catch (failure) {
      setActionError(failure);
    }
  };
  const create = (event) => {
    event.preventDefault();
    act(async () => {
      const created = await post("/apiKeys", { displayName: form.displayName, scope: form.scope, tenantId: form.tenantId });
      setSecret(created.secret);
    });
  };
  return html`<${Page} title="API keys">
    ${role.operator && html`<form class="toolbar" onSubmit=${(e) => (e.preventDefault(), setTenant(tenantDraft.trim()))}>
      <label for="k-tenant">Tenant id</label>
      <input id="k-tenant" placeholder="(your own)" value=${tenantDraft} onInput=${(e) => setTenantDraft(e.currentTarget.value)} />
      <button type="submit">Show</button></form>`}
    <${ErrorBox} error=${error || actionError} />
    <${Loading} when=${loading} />
    ${secret && html`<div class="ok" role="status">New key (shown once, copy it now): <code class="secret">${secret}</code></div>`}
    <div class="table-wrap"><table>
      <thead><tr><th>Name</th><th>Prefix</th><th>Scope</th><th>Tenant</th><th>Created</th><th>State</th><th></th></tr></thead>
      <tbody>${(data?.apiKeys || []).map(
        (k) => html`<tr class=${k.revokeTime ? "deleted" : ""}><td>${k.displayName}</td><td><code>${k.secretPrefix}…</code></td>
          <td>${enumText(k.scope, "API_KEY_SCOPE_")}</td><td><code>${k.tenantId}</code></td><td>${fmtTime(k.createTime)}</td>
          <td>${k.revokeTime ? html`<${Badge} kind="bad">revoked ${fmtTime(k.revokeTime)}<//>` : k.expireTime ? `expires ${fmtTime(k.expireTime)}` : "active"}</td>
          <td>${!k.revokeTime && html`<button class="danger" onClick=${() => confirm(`Revoke ${k.displayName || k.secretPrefix}?`) && act(() => post(`/apiKeys/${k.id}:revoke`))}>Revoke</button>`}</td></tr>`,
      )}</tbody>
    </table></div>
    <form class="inline-form" onSubmit=${create} aria-labelledby="new-key">
      <h2 id="new-key">New API key</h2>
      <label for="nk-name">Display name</label><input id="nk-name" required value=${form.displayName} onInput=${set("displayName")} />
      <label for="nk-scope">Scope</label>
      <select id="nk-scope" value=${form.scope} onChange=${set("scope")}><option value="API_KEY_SCOPE_CLIENT">client</option><option value="API_KEY_SCOPE_ADMIN">admin</option></select>
      ${role.operator && html`<label for="nk-tenant">Tenant id</label><input id="nk-tenant" placeholder="(your own)" value=${form.tenantId} onInput=${set("tenantId")} />`}
      <button type="submit">Create key</button>
    </form>
  <//>`;
}

// The console's shell: sign-in, the navigation a key may use, and a hash router
// (hash routes keep the static server trivial and never carry the key).
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { auth, probeRole } from "./api.js";
import { html, ErrorBox, Page } from "./ui.js";
import { AgentsPage } from "./pages/agents.js";
import { AgentEditPage } from "./pages/agent_edit.js";
import { ModelsPage } from "./pages/models.js";
import { ConversationsPage, SessionsPage } from "./pages/conversations.js";
import { TranscriptPage } from "./pages/transcript.js";
import { PlaygroundPage } from "./pages/playground.js";
import { UsagePage } from "./pages/usage.js";
import { TenantsPage } from "./pages/tenants.js";
import { ApiKeysPage } from "./pages/api_keys.js";
import { McpPage } from "./pages/mcp.js";
import "./styles.css";
import "uplot/dist/uPlot.min.css";

// [path pattern, component, who may see it]; the first match wins.
const ROUTES = [
  [/^\/agents\/new$/, AgentEditPage, "operator"],
  [/^\/agents\/([^/]+)$/, AgentEditPage, "any"],
  [/^\/agents$/, AgentsPage, "any"],
  [/^\/models$/, ModelsPage, "any"],
  [/^\/conversations\/([^/]+)$/, SessionsPage, "any"],
  [/^\/conversations$/, ConversationsPage, "any"],
  [/^\/sessions\/([^/]+)$/, TranscriptPage, "any"],
  [/^\/playground$/, PlaygroundPage, "any"],
  [/^\/usage$/, UsagePage, "any"],
  [/^\/tenants$/, TenantsPage, "operator"],
  [/^\/keys$/, ApiKeysPage, "admin"],
  [/^\/mcp$/, McpPage, "operator"],
];

const NAV = [
  ["/agents", "Agents", "any"],
  ["/models", "Models", "any"],
  ["/conversations", "Conversations", "any"],
  ["/playground", "Playground", "any"],
  ["/usage", "Usage", "any"],
  ["/tenants", "Tenants", "operator"],
  ["/keys", "API keys", "admin"],
  ["/mcp", "MCP servers", "operator"],
];

const allowed = (role, need) => need === "any" || (need === "admin" ? role.admin : role.operator);

function currentPath() {
  const hash = location.hash.replace(/^#/, "");
  const [path, search = ""] = hash.split("?");
  return { path: path || "/agents", search: new URLSearchParams(search) };
}

function SignIn({ onSignedIn }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    auth.key = key.trim();
    try {
      onSignedIn(await probeRole());
    } catch (failure) {
      auth.key = "";
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="signin">
    <form onSubmit=${submit} aria-labelledby="signin-title">
      <h1 id="signin-title">agentapi console</h1>
      <p class="muted">Sign in with an API key. It is kept in this tab's session storage only.</p>
      <label for="api-key">API key</label>
      <input id="api-key" name="api-key" type="password" autocomplete="off" required autofocus
        value=${key} onInput=${(e) => setKey(e.currentTarget.value)} />
      <button type="submit" disabled=${busy}>Sign in</button>
      <${ErrorBox} error=${error} />
    </form>
  </main>`;
}

function App() {
  const [role, setRole] = useState(null);
  const [checking, setChecking] = useState(Boolean(auth.key));
  const [route, setRoute] = useState(currentPath());
  useEffect(() => {
    const onHash = () => setRoute(currentPath());
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);
  useEffect(() => {
    if (!auth.key) return;
    probeRole().then(setRole, () => (auth.key = "")).finally(() => setChecking(false));
  }, []);
  useEffect(() => {
    // Moving focus to the new page's heading tells keyboard and screen-reader users where they are.
    document.getElementById("page-title")?.focus();
  }, [route.path, role]);
  if (checking) return html`<p class="muted">Checking the key…</p>`;
  if (!role) return html`<${SignIn} onSignedIn=${setRole} />`;
  const signOut = () => {
    auth.key = "";
    setRole(null);
  };
  let body = html`<${Page} title="Not found"><p>No such page.</p><//>`;
  for (const [pattern, Component, need] of ROUTES) {
    const match = route.path.match(pattern);
    if (!match) continue;
    body = allowed(role, need)
      ? // Keyed by the whole route: another id or query is a fresh page, not stale state.
        html`<${Component} key=${location.hash} id=${match[1]} search=${route.search} role=${role} />`
      : html`<${Page} title="Not allowed"><p class="error" role="alert">This key may not use this page.</p><//>`;
    break;
  }
  const who = role.operator ? "operator" : role.admin ? "tenant admin" : "client";
  return html`<div class="shell">
    <a class="skip" href="#main">Skip to content</a>
    <nav aria-label="Console">
      <span class="brand">agentapi</span>
      <ul>
        ${NAV.filter(([, , need]) => allowed(role, need)).map(
          ([path, label]) => html`<li>
            <a href=${`#${path}`} aria-current=${route.path.startsWith(path) ? "page" : undefined}>${label}</a>
          </li>`,
        )}
      </ul>
      <span class="who" data-role=${who}>${who}</span>
      <button class="link" onClick=${signOut}>Sign out</button>
    </nav>
    <main id="main">${body}</main>
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));

// What a REQUIRES_ACTION reply waits for, entered by hand: the output of each
// client tool call, and approve or deny for each server call awaiting approval.
import { useState } from "preact/hooks";
import { html } from "../ui.js";

export function ActionForm({ pending, onSubmit }) {
  const [outputs, setOutputs] = useState({});
  const [approvals, setApprovals] = useState({});
  const submit = (event) => {
    event.preventDefault();
    onSubmit({
      toolOutputs: pending.outputs.map((c) => ({ toolCallId: c.id, output: outputs[c.id] || "" })),
      approvals: pending.approvals.map((c) => ({ toolCallId: c.id, approve: approvals[c.id]?.approve !== false, reason: approvals[c.id]?.reason || "" })),
    });
  };
  return html`<form class="action-form" onSubmit=${submit} aria-labelledby="action-title">
    <h2 id="action-title">The reply waits for you</h2>
    ${pending.outputs.map(
      (call) => html`<div class="field">
        <label for=${`out-${call.id}`}>Output of <code>${call.function?.name}</code> (${call.function?.arguments})</label>
        <textarea id=${`out-${call.id}`} class="code tool-output" rows="2" value=${outputs[call.id] || ""}
          onInput=${(e) => setOutputs({ ...outputs, [call.id]: e.currentTarget.value })}></textarea>
      </div>`,
    )}
    ${pending.approvals.map(
      (call) => html`<fieldset class="field"><legend>Run <code>${call.function?.name}</code> with ${call.function?.arguments}?</legend>
        <label class="check"><input type="radio" name=${`ap-${call.id}`} checked=${approvals[call.id]?.approve !== false}
          onChange=${() => setApprovals({ ...approvals, [call.id]: { ...approvals[call.id], approve: true } })} /> Approve</label>
        <label class="check"><input type="radio" name=${`ap-${call.id}`} checked=${approvals[call.id]?.approve === false}
          onChange=${() => setApprovals({ ...approvals, [call.id]: { ...approvals[call.id], approve: false } })} /> Deny</label>
        <label for=${`reason-${call.id}`}>Reason</label>
        <input id=${`reason-${call.id}`} value=${approvals[call.id]?.reason || ""}
          onInput=${(e) => setApprovals({ ...approvals, [call.id]: { ...approvals[call.id], reason: e.currentTarget.value } })} />
      </fieldset>`,
    )}
    <button type="submit">Submit</button>
  </form>`;
}

// The only script on the approval pages: the WebAuthn ceremony. No framework, no build step.
(function () {
  "use strict";
  function b64uToBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const bin = atob(s);
    return Uint8Array.from(bin, (c) => c.charCodeAt(0)).buffer;
  }
  function bufToB64u(buf) {
    let bin = "";
    new Uint8Array(buf).forEach((b) => (bin += String.fromCharCode(b)));
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function csrf() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }
  async function post(url, body) {
    const res = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: body === undefined ? "{}" : JSON.stringify(body),
    });
    return { ok: res.ok, status: res.status, data: await res.json() };
  }
  function say(text) {
    const el = document.getElementById("webauthn-status");
    if (el) el.textContent = text;
  }
  function credentialJSON(cred) {
    const r = cred.response;
    const response = { clientDataJSON: bufToB64u(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = bufToB64u(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = bufToB64u(r.authenticatorData);
      response.signature = bufToB64u(r.signature);
      if (r.userHandle) response.userHandle = bufToB64u(r.userHandle);
    }
    return { id: cred.id, rawId: bufToB64u(cred.rawId), type: cred.type, response: response,
             clientExtensionResults: cred.getClientExtensionResults() };
  }
  const verify = document.getElementById("webauthn-verify");
  if (verify) {
    verify.addEventListener("click", async () => {
      say("Waiting for your passkey…");
      const begin = await post(verify.dataset.begin);
      if (!begin.ok) return say(begin.data.message || "Could not start.");
      const o = begin.data;
      o.challenge = b64uToBuf(o.challenge);
      (o.allowCredentials || []).forEach((c) => (c.id = b64uToBuf(c.id)));
      try {
        const cred = await navigator.credentials.get({ publicKey: o });
        const done = await post(verify.dataset.complete, credentialJSON(cred));
        if (!done.ok) return say(done.data.message || "Verification failed.");
        say("Verified. Approving…");
        document.getElementById("approve").click();
      } catch (e) { say("Cancelled or not allowed: " + e.name); }
    });
  }
  const register = document.getElementById("webauthn-register");
  if (register) {
    register.addEventListener("click", async () => {
      say("Waiting for your authenticator…");
      const begin = await post(register.dataset.begin);
      if (begin.status === 403 && begin.data.error === "fresh_auth_required") {
        window.location = register.dataset.reauth;
        return;
      }
      if (!begin.ok) return say(begin.data.message || "Could not start.");
      const o = begin.data;
      o.challenge = b64uToBuf(o.challenge);
      o.user.id = b64uToBuf(o.user.id);
      (o.excludeCredentials || []).forEach((c) => (c.id = b64uToBuf(c.id)));
      try {
        const cred = await navigator.credentials.create({ publicKey: o });
        const name = document.getElementById("credential-name").value;
        const done = await post(register.dataset.complete, { credential: credentialJSON(cred), name: name });
        if (!done.ok) return say(done.data.message || "Registration failed.");
        say("Added " + done.data.name + ".");
        window.location.reload();
      } catch (e) { say("Cancelled or not allowed: " + e.name); }
    });
  }
})();

// mailgem ui: forms posted with fetch (CSRF header), the connection test's live steps, and the
// job page's live preview. No build step, no framework.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  async function request(url, body) {
    const response = await fetch(url, {method: "POST", body, headers: {"X-CSRF-Token": csrf},
                                       credentials: "same-origin"});
    if (!response.ok) {
      const text = (await response.text()).replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim();
      throw new Error(response.status === 403 && !text.startsWith("403")
        ? `403: ${text}` : text.slice(0, 500) || `HTTP ${response.status}`);
    }
    return response;
  }
  async function post(url, body) { return (await request(url, body)).json(); }

  // The connection test's server-sent events, read from a POST's body as they arrive.
  async function streamSteps(url, body, pre, button) {
    pre.hidden = false;
    pre.textContent = "";
    pre.className = "steps running";
    button.disabled = true;
    try {
      const reader = (await request(url, body)).body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const kind = (block.match(/^event: (\w+)$/m) || [])[1];
          const data = JSON.parse((block.match(/^data: (.*)$/m) || [])[1] || "{}");
          if (kind === "step") pre.textContent += `${data.step.padEnd(8)} ${data.line}\n`;
          if (kind === "done") {
            pre.textContent += "\n" + data.lines.join("\n") + "\n";
            pre.className = "steps " + (data.ok ? "passed" : "failed");
          }
        }
      }
    } catch (error) {
      pre.textContent += String(error.message || error);
      pre.className = "steps failed";
    } finally { button.disabled = false; }
  }

  function showDiagnostics(root, fields, general) {
    root.querySelectorAll(".diag").forEach((d) => { d.textContent = ""; d.parentElement.classList.remove("invalid"); });
    for (const [path, messages] of Object.entries(fields || {})) {
      const list = Array.isArray(messages) ? messages : [messages];
      let diag = root.querySelector(`.diag[data-for="${CSS.escape(path)}"]`);
      // A message about a part of a field (email.attachments[0].format) goes to the field holding it.
      for (let p = path; !diag && p.includes("."); p = p.replace(/[.[][^.[]*$/, "")) {
        diag = root.querySelector(`.diag[data-for="${CSS.escape(p.replace(/[.[][^.[]*$/, ""))}"]`);
      }
      if (diag) { diag.textContent = list.join("\n"); diag.parentElement.classList.add("invalid"); }
      else if (general) general.push(...list.map((m) => `${path}: ${m}`));
    }
    const ul = root.querySelector(".general");
    if (ul) {
      ul.replaceChildren(...(general || []).map((m) => { const li = document.createElement("li"); li.textContent = m;
        li.className = m.startsWith("warning") ? "warning" : "error"; return li; }));
    }
  }

  function showConflict(root, diff) {
    const box = root.querySelector(".conflict");
    if (!box) return;
    box.hidden = false;
    box.querySelector("pre").textContent = diff;
  }

  function say(form, text) {
    const message = form.querySelector(".message");
    if (message) { message.hidden = !text; message.textContent = text || ""; }
  }

  // Plain forms (fabric page): posted, then redirect, errors at their fields, or values filled in.
  document.querySelectorAll("form.post").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let result;
      try { result = await post(form.dataset.post, new FormData(form)); }
      catch (error) { say(form, String(error.message || error)); return; }
      if (result.redirect) { window.location = result.redirect; return; }
      if (result.values) {
        const target = document.querySelector(form.dataset.fill);
        for (const [name, value] of Object.entries(result.values)) {
          const input = target.querySelector(`[name="${CSS.escape(name)}"]`);
          if (input) input.value = value;
        }
      }
      if (result.conflict) showConflict(form, result.conflict);
      showDiagnostics(form, result.errors || {}, []);
      say(form, result.message);
    });
  });

  // Test connection: a saved connection (the fabric page's rows), or the form as it is (not saved).
  document.querySelectorAll("button[data-test]").forEach((button) => {
    button.addEventListener("click", () => {
      const name = button.dataset.test;
      const pre = document.querySelector(`pre[data-steps="${CSS.escape(name)}"]`);
      pre.closest("tr").hidden = false;
      streamSteps(`/fabric/test/${encodeURIComponent(name)}`, new FormData(), pre, button);
    });
  });
  document.querySelectorAll("button[data-test-form]").forEach((button) => {
    button.addEventListener("click", () => {
      const form = button.closest("form");
      streamSteps(button.dataset.testForm, new FormData(form), form.querySelector("pre[data-steps-form]"), button);
    });
  });

  // The job page.
  const jobForm = document.getElementById("job-form");
  if (!jobForm) return;
  const panel = document.getElementById("preview-panel");
  const status = document.getElementById("preview-status");
  const mode = jobForm.querySelector('[name="_mode"]');
  const bar = jobForm.querySelector(".bar .message");
  let timer = null, sequence = 0;

  async function refresh() {
    const mine = ++sequence, started = performance.now();
    status.textContent = "Updating…";
    let result;
    try { result = await post("/job/preview", new FormData(jobForm)); }
    catch (error) { status.textContent = String(error.message || error); return; }
    if (mine !== sequence || result.stale) return;  // a newer edit's preview is on its way
    const general = [...(result.general || [])];
    showDiagnostics(jobForm, result.fields, general);
    if (result.html !== undefined) {
      panel.innerHTML = result.html;
      status.textContent = `Updated in ${Math.round(performance.now() - started)} ms`;
    } else {
      status.textContent = "Not updated: fix the errors on the left";
    }
  }
  function soon() { clearTimeout(timer); timer = setTimeout(refresh, 150); }
  jobForm.addEventListener("input", soon);
  jobForm.addEventListener("change", soon);
  panel.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-message]");
    if (!button) return;
    jobForm.querySelector('[name="_message"]').value = button.dataset.message;
    refresh();
  });
  document.getElementById("phone").addEventListener("change", (e) => panel.classList.toggle("phone", e.target.checked));
  document.getElementById("dark").addEventListener("change", (e) => {
    panel.classList.toggle("dark", e.target.checked);
    jobForm.querySelector('[name="_dark"]').value = e.target.checked ? "1" : "0";
    refresh();  // the canvas is darkened in the message itself, as a webmail dark mode does
  });

  jobForm.querySelectorAll("[data-tab]").forEach((tab) => {
    tab.addEventListener("click", async () => {
      const to = tab.dataset.tab;
      if (to === mode.value) return;
      let result;
      try { result = await post(to === "yaml" ? "/job/yaml" : "/job/form", new FormData(jobForm)); }
      catch (error) { bar.textContent = String(error.message || error); return; }
      if (to === "yaml" && result.yaml !== undefined) document.getElementById("yaml").value = result.yaml;
      else if (to === "form" && result.html !== undefined) document.getElementById("fields").innerHTML = result.html;
      else { showDiagnostics(jobForm, result.fields || {}, [...(result.general || [])]); return; }
      mode.value = to;
      jobForm.querySelectorAll("[data-tab]").forEach((t) => t.setAttribute("aria-selected", String(t === tab)));
      jobForm.querySelectorAll("[data-panel]").forEach((p) => { p.hidden = p.dataset.panel !== to; });
    });
  });

  document.getElementById("save").addEventListener("click", async () => {
    let result;
    try { result = await post("/job/save", new FormData(jobForm)); }
    catch (error) { bar.textContent = String(error.message || error); return; }
    if (result.redirect) { window.location = result.redirect; return; }
    if (result.conflict) showConflict(jobForm, result.conflict);
    if (result.fields) showDiagnostics(jobForm, result.fields, []);
    bar.textContent = result.message || "";
  });
  document.getElementById("send-test").addEventListener("click", async (event) => {
    const out = jobForm.querySelector(".send-result");
    event.target.disabled = true;
    out.textContent = "Sending…";
    try {
      const result = await post("/job/send-test", new FormData(jobForm));
      out.textContent = result.message;
      out.className = "send-result " + (result.ok ? "ok" : "error");
    } catch (error) {
      out.textContent = String(error.message || error);
      out.className = "send-result error";
    } finally { event.target.disabled = false; }
  });
  refresh();
})();

// Helios panel: a little progressive enhancement. Every page works without it.
"use strict";

// Ask before a destructive form is sent (forms with data-confirm="question").
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

// Copy the text of the input named by a button's data-copy, and say so.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const input = document.getElementById(button.dataset.copy);
  const result = button.parentElement.querySelector("[data-copy-result]");
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    if (result) result.textContent = "Copied.";
  } catch (error) {
    if (result) result.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
});

// Follow a deployment: poll its JSON twin every second and update the page until it ends.
(() => {
  const root = document.querySelector("[data-poll]");
  if (!root || root.dataset.terminal === "true") return;
  const showTime = (iso) => (iso ? iso.replace("T", " ").replace("Z", "") + " UTC" : "—");
  const render = (state) => {
    for (const el of root.querySelectorAll("[data-field]")) {
      const value = state[el.dataset.field];
      if (el.dataset.field === "status") el.className = "badge " + value;
      if (el.dataset.field === "status_message" && !value) continue;
      el.textContent = "time" in el.dataset ? showTime(value) : value ?? "—";
    }
  };
  const poll = async () => {
    try {
      const response = await fetch(root.dataset.poll, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const state = await response.json();
        render(state);
        if (state.terminal) {
          root.querySelector("[data-live-note]").textContent = "Finished.";
          return;
        }
      }
    } catch (error) {
      // The panel restarting or a network blip: the next poll tries again.
    }
    window.setTimeout(poll, 1000);
  };
  window.setTimeout(poll, 1000);
})();

// Follow a provisioning run: its events arrive over Server-Sent Events until it ends, then the
// page reloads to show the recap. The panel closes each stream after a while and the browser
// reconnects by itself, resuming after the last event it got (Last-Event-ID). When the panel
// is busy it refuses the stream (503), which closes it for good: try again a little later.
(() => {
  const list = document.getElementById("run-events");
  if (!list || list.dataset.done === "true" || !window.EventSource) return;
  const note = document.getElementById("run-live-note");
  const kinds = ["task", "play", "ok", "changed", "failed", "unreachable", "skipped", "recap",
    "warning", "error"];
  const withText = ["changed", "failed", "recap"];
  const busyRetryMs = 15000;
  let last = Number(list.dataset.last) || 0;
  const element = (tag, className, value) => {
    const el = document.createElement(tag);
    el.className = className;
    el.textContent = value;
    return el;
  };
  const show = (event) => {
    const item = document.createElement("li");
    item.className = "ev " + event.kind;
    item.appendChild(element("span", "kind", event.kind));
    if (event.host) item.appendChild(element("span", "host", event.host));
    item.appendChild(element("span", "task", event.task || event.play || ""));
    if (event.text && withText.includes(event.kind)) {
      item.appendChild(element("pre", "out", event.text));
    }
    list.appendChild(item);
  };
  const follow = () => {
    const source = new EventSource(list.dataset.stream + "?after=" + last);
    // Ansible's own "error" events share their name with EventSource's connection errors;
    // only the former carry data.
    const receive = (message) => {
      if (!(message instanceof MessageEvent)) return;
      const event = JSON.parse(message.data);
      if (event.seq <= last) return; // already shown
      last = event.seq;
      show(event);
    };
    for (const kind of kinds) source.addEventListener(kind, receive);
    source.addEventListener("open", () => { note.textContent = ""; });
    source.addEventListener("end", () => {
      source.close();
      window.location.reload();
    });
    source.addEventListener("error", (message) => {
      if (message instanceof MessageEvent || source.readyState !== EventSource.CLOSED) return;
      note.textContent = "Live updates paused: the panel is busy. Trying again shortly…";
      window.setTimeout(follow, busyRetryMs + Math.random() * 5000);
    });
  };
  follow();
})();

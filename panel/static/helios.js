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

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

// Follow a live stream of the panel (Server-Sent Events). `handlers` maps event names to
// functions of the event's parsed data; `closed` runs when the browser gave up on the stream
// for good (the panel refused it, or answered something other than a stream). A stream the
// panel closes after a while without "end" is reopened by the browser by itself.
const follow = (url, handlers, closed) => {
  const source = new EventSource(url);
  for (const [name, handle] of Object.entries(handlers)) {
    // A stream's own "error" events (Ansible's) share their name with EventSource's connection
    // errors; only the former are messages with data.
    source.addEventListener(name, (message) => {
      if (message instanceof MessageEvent) handle(JSON.parse(message.data));
    });
  }
  source.addEventListener("error", (message) => {
    if (!(message instanceof MessageEvent) && source.readyState === EventSource.CLOSED) closed();
  });
  return source;
};

// Say on a live page's note that its updates stopped, with a link that reloads it.
const sayStopped = (note) => {
  const reload = document.createElement("a");
  reload.href = window.location.href;
  reload.textContent = "reload";
  note.replaceChildren("Live updates stopped — ", reload, " the page to see the latest state.");
};

// Follow a deployment: its stream sends the state now and again after every change, then
// "end"; the status, progress message and times change in place, without a reload.
(() => {
  const root = document.querySelector(".deployment[data-stream]");
  if (!root || root.dataset.terminal === "true") return;
  const note = root.querySelector("[data-live-note]");
  const stopped = () => sayStopped(note);
  if (!window.EventSource) {
    stopped();
    return;
  }
  const showTime = (iso) => (iso ? iso.replace("T", " ").replace("Z", "") + " UTC" : "—");
  const failure = root.querySelector("[data-failure]");
  const showFailure = (reason) => {
    if (!reason || !failure) return;
    failure.querySelector("[data-failure-message]").textContent = reason.message;
    failure.querySelector("[data-failure-events]").replaceChildren(...reason.events.map((e) => {
      const item = document.createElement("li");
      item.textContent = e.process + "/" + e.alloc + " " + e.task + ": " + e.text;
      return item;
    }));
    const output = failure.querySelector("[data-failure-output]");
    output.textContent = reason.output.map((line) => line + "\n").join("");
    output.hidden = reason.output.length === 0;
    failure.querySelector("[data-failure-output-note]").hidden = output.hidden;
    failure.querySelector("[data-failure-alloc]").textContent = reason.alloc;
    failure.hidden = false;
  };
  const cancel = root.querySelector("[data-cancel]");
  const render = (state) => {
    showFailure(state.failure);
    // Cancel only while Nomad has not accepted it: hidden once registered or ended.
    if (cancel) cancel.hidden = !state.cancellable;
    for (const el of root.querySelectorAll("[data-field]")) {
      const value = state[el.dataset.field];
      if (el.dataset.field === "status") el.className = "badge " + value;
      if (el.dataset.field === "status_message" && !value) {
        // No note yet: why it waits (no worker, no cluster), else what the page said first.
        el.textContent = state.waiting || el.dataset.idle || el.textContent;
        continue;
      }
      el.textContent = "time" in el.dataset ? showTime(value) : value ?? "—";
    }
  };
  note.textContent = ""; // what the page says without JavaScript is no longer true
  const source = follow(root.dataset.stream, {
    deployment: render,
    end: () => {
      source.close();
      note.textContent = "Finished.";
    },
  }, stopped);
  source.addEventListener("open", () => {
    note.textContent = "This page follows the deployment as it happens.";
  });
})();

// Follow a build, then the deployment it started: one stream sends "build" and "deployment"
// states as they change, then "end"; both cards change in place, without a reload.
(() => {
  const root = document.querySelector(".build[data-stream]");
  if (!root || root.dataset.terminal === "true") return;
  const deploy = document.querySelector(".deployment-of-build");
  const note = root.querySelector("[data-live-note]");
  const stopped = () => sayStopped(note);
  if (!window.EventSource) {
    stopped();
    return;
  }
  const showTime = (iso) => (iso ? iso.replace("T", " ").replace("Z", "") + " UTC" : "—");
  const fill = (scope, attribute, state) => {
    for (const el of scope.querySelectorAll("[" + attribute + "]")) {
      const name = el.getAttribute(attribute);
      let value = state[name];
      if (name === "status") el.className = "badge " + value;
      if (name === "status_message" && !value) continue;
      if (Array.isArray(value)) value = value.join(", ") || "—";
      el.textContent = "time" in el.dataset ? showTime(value) : value || (value === 0 ? 0 : "—");
    }
  };
  note.textContent = "";
  const source = follow(root.dataset.stream, {
    build: (state) => fill(root, "data-build-field", state),
    deployment: (state) => {
      deploy.hidden = false;
      fill(deploy, "data-deploy-field", state);
      const link = deploy.querySelector("[data-deploy-link]");
      link.href = root.dataset.stream.replace(/\/builds\/\d+\/stream$/, "/deployments/" + state.id);
      link.textContent = "#" + state.id;
    },
    end: () => {
      source.close();
      note.textContent = "Finished.";
    },
  }, stopped);
  source.addEventListener("open", () => {
    note.textContent = "This page follows the build and its deploy as they happen.";
  });
})();

// Follow a build's log: its stream sends the stored chunks after the last one on the page
// (`?after=`; on a reconnect the browser's Last-Event-ID), then live ones, then "end". Each
// chunk's text is appended to the <pre> as text, never as markup; what is there stays after
// the end.
(() => {
  const root = document.querySelector(".build-log[data-log-stream]");
  if (!root || root.dataset.done === "true" || !window.EventSource) return;
  const pre = root.querySelector("[data-log]");
  let last = Number(root.dataset.last) || 0;
  const source = follow(root.dataset.logStream + "?after=" + last, {
    log: (chunk) => {
      if (chunk.seq <= last) return; // shown already
      last = chunk.seq;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.appendChild(document.createTextNode(chunk.text));
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    },
    end: () => source.close(),
  }, () => {});
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
    "warning", "error", "step"];
  const withText = ["changed", "failed", "unreachable", "recap", "error"];
  const busyRetryMs = 15000;
  let last = Number(list.dataset.last) || 0;
  const element = (tag, className, value) => {
    const el = document.createElement(tag);
    el.className = className;
    el.textContent = value;
    return el;
  };
  const show = (event) => {
    if (event.seq <= last) return; // already shown
    last = event.seq;
    const item = document.createElement("li");
    item.className = "ev " + event.kind;
    item.appendChild(element("span", "kind", event.kind));
    if (event.host) item.appendChild(element("span", "host", event.host));
    item.appendChild(element("span", "task", event.task || event.play || ""));
    // Why a host failed or could not be reached (SSH's own words), else what it printed.
    if (event.msg && ["failed", "unreachable", "item_failed"].includes(event.kind)) {
      item.appendChild(element("pre", "out", event.msg));
    } else if (event.text && withText.includes(event.kind)) {
      item.appendChild(element("pre", "out", event.text));
    }
    list.appendChild(item);
  };
  const connect = () => {
    const handlers = Object.fromEntries(kinds.map((kind) => [kind, show]));
    handlers.end = () => {
      source.close();
      window.location.reload();
    };
    const source = follow(list.dataset.stream + "?after=" + last, handlers, () => {
      note.textContent = "Live updates paused: the panel is busy. Trying again shortly…";
      window.setTimeout(connect, busyRetryMs + Math.random() * 5000);
    });
    source.addEventListener("open", () => { note.textContent = ""; });
  };
  connect();
})();

// A row of an app's log as the pages show it (the same as the panel's log_line filter).
const logLine = (row) => {
  const clock = (row.time || "").slice(11, 19);
  const source = row.stream === "helios" ? "helios"
    : row.process + "/" + (row.alloc || "").slice(0, 8) + " " + row.stream;
  return row.text.replace(/\n$/, "").split("\n").map((line) => clock + " " + source + ": " + line + "\n").join("");
};

// Append text to a log <pre>, keeping it scrolled to the bottom when it was.
const appendLog = (pre, text) => {
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.appendChild(document.createTextNode(text));
  if (atBottom) pre.scrollTop = pre.scrollHeight;
};

// Follow a deployment's log: the rows after the last one on the page, then live ones, then
// "end" once the deployment is over; what is there stays.
(() => {
  const root = document.querySelector(".deploy-log[data-log-stream]");
  if (!root || root.dataset.done === "true" || !window.EventSource) return;
  const pre = root.querySelector("[data-log]");
  const failure = document.querySelector("[data-failure]");
  // What the failing allocation printed after the deployment ended joins "Why it failed".
  const lateOutput = (row) => {
    if (!failure || failure.hidden || !["stdout", "stderr"].includes(row.stream)) return;
    const alloc = failure.querySelector("[data-failure-alloc]");
    if (alloc.textContent && alloc.textContent !== row.alloc.slice(0, 8)) return;
    alloc.textContent = row.alloc.slice(0, 8);
    const output = failure.querySelector("[data-failure-output]");
    const lines = (output.textContent + row.text).split("\n").filter((line) => line !== "");
    output.textContent = lines.slice(-20).map((line) => line + "\n").join("");
    output.hidden = false;
    failure.querySelector("[data-failure-output-note]").hidden = false;
  };
  let last = Number(root.dataset.last) || 0;
  const source = follow(root.dataset.logStream + "?after=" + last, {
    log: (row) => {
      if (row.seq <= last) return;
      last = row.seq;
      appendLog(pre, logLine(row));
      lateOutput(row);
    },
    end: () => source.close(),
  }, () => {});
})();

// The Logs tab: the app's live log, filtered by process and stream (a new stream per change of
// the filters), paused without losing lines (they wait and show on resume), at most MAX_LINES
// kept on the page.
(() => {
  const root = document.querySelector(".app-log[data-log-stream]");
  if (!root) return;
  const pre = root.querySelector("[data-log]");
  const form = root.querySelector("[data-log-filters]");
  const pauseButton = root.querySelector("[data-log-pause]");
  const state = root.querySelector("[data-log-state]");
  const download = root.querySelector("[data-log-download]");
  const MAX_LINES = 5000;
  let source = null;
  let paused = false;
  let held = [];
  let last = 0;
  if (!window.EventSource) {
    state.textContent = "This browser cannot follow the log live: download it instead.";
    return;
  }
  const query = () => {
    const params = new URLSearchParams();
    for (const box of form.querySelectorAll("input[type=checkbox]")) {
      if (box.checked) params.append(box.name, box.value);
    }
    return params;
  };
  const trim = () => {
    while (pre.childNodes.length > MAX_LINES) pre.removeChild(pre.firstChild);
  };
  const show = (rows) => {
    for (const row of rows) appendLog(pre, logLine(row));
    trim();
  };
  const open = () => {
    if (source) source.close();
    pre.replaceChildren();
    held = [];
    last = 0;
    const params = query();
    download.href = root.querySelector("[data-log-download]").href.split("?")[0] + "?" + params;
    state.textContent = "Connecting…";
    source = follow(root.dataset.logStream + "?" + params, {
      log: (row) => {
        if (row.seq <= last) return;
        last = row.seq;
        if (paused) held.push(row);
        else show([row]);
      },
    }, () => {
      state.textContent = "Live updates stopped: reload the page to follow again.";
    });
    source.addEventListener("open", () => {
      state.textContent = paused ? "Paused: new lines wait." : "Following live.";
    });
  };
  form.addEventListener("change", open);
  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Resume" : "Pause";
    state.textContent = paused ? "Paused: new lines wait." : "Following live.";
    if (!paused) {
      show(held);
      held = [];
    }
  });
  open();
})();

// The app page's "Running now": its health and instances change in place when the sampler
// records a change (Server-Sent Events "health").
(() => {
  const root = document.querySelector(".live-state[data-live-stream]");
  if (!root || !window.EventSource) return;
  const badge = root.querySelector("[data-health-state]");
  const reason = root.querySelector("[data-health-reason]");
  const body = root.querySelector("[data-instances]");
  const cell = (text, badgeClass) => {
    const td = document.createElement("td");
    if (badgeClass) {
      const span = document.createElement("span");
      span.className = "badge " + badgeClass;
      span.textContent = text;
      td.appendChild(span);
    } else {
      td.textContent = text;
    }
    return td;
  };
  follow(root.dataset.liveStream, {
    health: (state) => {
      badge.className = "badge " + state.state;
      badge.textContent = state.state.replace("_", " ");
      reason.textContent = state.reason;
      body.replaceChildren(...state.instances.map((i) => {
        const row = document.createElement("tr");
        const alloc = document.createElement("td");
        const code = document.createElement("code");
        code.textContent = i.alloc;
        alloc.appendChild(code);
        const health = cell(i.health, i.health);
        // Each Consul check as a badge, its output as the tooltip; null: Consul not read.
        for (const check of i.checks || []) {
          const span = document.createElement("span");
          span.className = "badge check-" + check.status;
          span.title = check.output || "no output";
          span.textContent = check.name + ": " + check.status;
          health.append(" ", span);
        }
        if (i.checks === null) {
          const span = document.createElement("span");
          span.className = "muted";
          span.title = "Consul could not be read in the last pass";
          span.textContent = "checks unknown";
          health.append(" ", span);
        }
        row.append(alloc, cell(i.group), cell(i.node), cell(i.version ?? "—"), cell(i.status),
          health, cell(String(i.restarts)), cell(i.started_at || "—"),
          cell(i.last_failure || "—"));
        return row;
      }));
      body.closest("table").hidden = state.instances.length === 0;
    },
  }, () => {});
})();

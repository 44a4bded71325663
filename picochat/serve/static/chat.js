// The picochat chat page: plain JS, no build step. It talks to the same OpenAI-compatible API as
// any other client (POST /v1/chat/completions with stream: true) and reads the SSE stream.
// The conversation lives here, in `conversation`; the server is stateless.
// A server started with --api-key answers 401 until the page sends `Authorization: Bearer <key>`:
// the page then asks for the key once and keeps it in this browser's localStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const messagesEl = $("messages"), input = $("input"), sendBtn = $("send"), stopBtn = $("stop");
const actions = $("actions");

let conversation = [];   // [{role, content}] as the API takes it; assistant content may be parts
let controller = null;   // AbortController of the reply being streamed, if any

const KEY_STORE = "picochat-api-key";

// fetch() for the API: JSON body, the API key if one is set; on 401, ask for the key and retry.
async function api(path, options = {}) {
  for (let attempt = 0; ; attempt++) {
    const key = localStorage.getItem(KEY_STORE);
    const headers = { ...(options.headers || {}) };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (key) headers["Authorization"] = `Bearer ${key}`;
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401 || attempt > 0) return response;
    const entered = window.prompt(key ? "That API key was refused. API key:" : "This server needs an API key:");
    if (!entered) return response;
    localStorage.setItem(KEY_STORE, entered.trim());
  }
}

api("/v1/models").then((r) => r.json()).then((m) => { $("model").textContent = m.data[0].id; })
  .catch(() => {});

function scrollDown() { messagesEl.scrollTop = messagesEl.scrollHeight; }

function addBubble(role) {
  $("empty").hidden = true;
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  messagesEl.appendChild(div);
  scrollDown();
  return div;
}

function showUser(text) { addBubble("user").textContent = text; }

// An assistant bubble holds segments: reply text, tool calls (python) and their results.
function segmentEl(bubble, type) {
  const last = bubble.lastElementChild;
  if (last && last.dataset.type === type) return last;
  const el = document.createElement(type === "text" ? "span" : "div");
  el.dataset.type = type;
  el.className = type === "text" ? "text" : `tool ${type}`;
  if (type !== "text") {
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = type === "python" ? "tool call · python" : "tool output";
    const code = document.createElement("code");
    el.append(label, code);
  }
  bubble.appendChild(el);
  return el;
}

function appendPiece(bubble, parts, type, text) {
  const el = segmentEl(bubble, type);
  (type === "text" ? el : el.querySelector("code")).textContent += text;
  const last = parts[parts.length - 1];
  if (last && last.type === type) last.text += text; else parts.push({ type, text });
  scrollDown();
}

function setBusy(busy) {
  sendBtn.hidden = busy;
  stopBtn.hidden = !busy;
  input.disabled = false;
  actions.hidden = busy || !conversation.some((m) => m.role === "assistant");
}

function settings() {
  const num = (id, d) => { const v = parseFloat($(id).value); return Number.isFinite(v) ? v : d; };
  return { temperature: num("temperature", 0.6), top_k: Math.round(num("top-k", 50)),
           max_tokens: Math.max(1, Math.round(num("max-tokens", 512))) };
}

// Parse SSE: events are separated by a blank line; we only use `data:` lines.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) yield line.slice(6);
      }
    }
  }
}

async function streamReply() {
  const bubble = addBubble("assistant");
  bubble.classList.add("streaming");
  const parts = [];
  controller = new AbortController();
  setBusy(true);
  let finish = null;
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST", signal: controller.signal,
      body: JSON.stringify({ messages: conversation, stream: true, ...settings() }),
    });
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      throw new Error(err.error ? err.error.message : `HTTP ${response.status}`);
    }
    for await (const data of sseEvents(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      for (const choice of chunk.choices || []) {
        const d = choice.delta || {};
        if (d.content) appendPiece(bubble, parts, d.segment || "text", d.content);
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") {
      const err = document.createElement("div");
      err.className = "error";
      err.textContent = `⚠ ${e.message}`;
      bubble.appendChild(err);
    } else {
      finish = "stopped";
    }
  } finally {
    controller = null;
    bubble.classList.remove("streaming");
    if (finish === "length" || finish === "stopped") {
      const note = document.createElement("div");
      note.className = "note";
      note.textContent = finish === "length" ? "cut off: max tokens reached" : "stopped";
      bubble.appendChild(note);
    }
    // Keep what arrived (also after Stop), so the next turn sees the reply as it was shown.
    const tools = parts.some((p) => p.type !== "text");
    const content = tools ? parts : parts.map((p) => p.text).join("");
    conversation.push({ role: "assistant", content });
    bubble.dataset.index = String(conversation.length - 1);
    setBusy(false);
    input.focus();
  }
}

function send(text) {
  if (controller || !text.trim()) return;
  conversation.push({ role: "user", content: text });
  showUser(text);
  input.value = "";
  autoGrow();
  streamReply();
}

function regenerate() {
  if (controller) return;
  const last = conversation[conversation.length - 1];
  if (!last || last.role !== "assistant") return;
  conversation.pop();
  const bubbles = messagesEl.querySelectorAll(".msg.assistant");
  bubbles[bubbles.length - 1].remove();
  streamReply();
}

function newChat() {
  if (controller) controller.abort();
  conversation = [];
  messagesEl.querySelectorAll(".msg").forEach((el) => el.remove());
  $("empty").hidden = false;
  actions.hidden = true;
  input.focus();
}

function autoGrow() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(input.value); });
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(input.value); }
});
input.addEventListener("input", autoGrow);
stopBtn.addEventListener("click", () => { if (controller) controller.abort(); });
$("regenerate").addEventListener("click", regenerate);
$("new-chat").addEventListener("click", newChat);
input.focus();

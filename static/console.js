// The console page's client: opens the console's WebSocket, reads vmdeck's one-message
// preamble, then hands the open socket to noVNC (static/novnc, vendored by
// scripts/vendor-novnc.sh), which speaks RFB over it and draws the VM's screen.
//
// A module file, not inline script: the CSP is `script-src 'self'`. The WebSocket goes to the
// page's own origin (ws: or wss: after the page's scheme, so it works behind a TLS proxy),
// which `connect-src 'self'` allows (src/security.rs).
//
// The page states its state in words in #console-status and, for tests and styles, in its
// `data-state`: connecting, connected, disconnected.
import RFB from "./novnc/core/rfb.js";
import KeyTable from "./novnc/core/input/keysym.js";

const REFUSED =
  "the server refused the connection: the page's one-time ticket expired, was already used " +
  "or belongs to another session (or vmdeck could not be reached)";

const status = document.getElementById("console-status");
const screen = document.getElementById("console-screen");

if (status && screen && status.dataset.wsPath) {
  start(status, screen);
}

function start(status, screen) {
  const viewOnly = status.dataset.mode !== "interactive";
  const controls = document.getElementById("console-controls");
  const inputs = document.getElementById("console-inputs");
  const viewOnlyNote = document.getElementById("console-view-only");
  const reconnect = document.getElementById("console-reconnect");
  const cad = document.getElementById("console-cad");
  const full = document.getElementById("console-fullscreen");
  const textForm = document.getElementById("console-send-text");
  const textField = document.getElementById("console-text");
  const textEnter = document.getElementById("console-text-enter");
  const textNote = document.getElementById("console-text-note");

  let rfb = null;
  // How the socket closed (our own listener runs before noVNC's onclose handler, so this is
  // known when noVNC's "disconnect" event fires).
  let closed = null;
  let preambleSeen = false;
  let said = false;

  const show = (state, words) => {
    status.dataset.state = state;
    status.textContent = words;
  };
  const disconnected = (why) => {
    if (said) return;
    said = true;
    show("disconnected", `Disconnected: ${why}.`);
    for (const b of [cad, full]) if (b) b.disabled = true;
    if (textForm) for (const el of textForm.elements) el.disabled = true;
    if (reconnect) reconnect.hidden = false;
  };
  const closeWords = () => {
    if (closed && closed.code === 4000 && closed.reason) return closed.reason;
    if (closed && closed.reason) return `${closed.reason} (code ${closed.code})`;
    if (!preambleSeen) return REFUSED;
    return "the connection to vmdeck was lost" + (closed ? ` (code ${closed.code})` : "");
  };

  if (controls) controls.hidden = false;
  if (viewOnly) {
    // The server drops a viewer's input anyway; the page does not offer it.
    if (inputs) inputs.hidden = true;
    if (viewOnlyNote) viewOnlyNote.hidden = false;
  }
  // A reconnect needs a new one-time ticket, which only a fresh page load issues.
  if (reconnect) reconnect.addEventListener("click", () => window.location.reload());

  show("connecting", "Connecting…");
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${window.location.host}${status.dataset.wsPath}`);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("close", (e) => {
    closed = { code: e.code, reason: e.reason };
    // Before noVNC took over (refused upgrade, preamble error), no "disconnect" event comes.
    if (!rfb) disconnected(closeWords());
  });

  const preamble = (e) => {
    socket.removeEventListener("message", preamble);
    preambleSeen = true;
    let hello = null;
    try {
      hello = typeof e.data === "string" ? JSON.parse(e.data) : null;
    } catch {
      hello = null;
    }
    if (!hello || hello.ok !== true) {
      const why = hello && hello.error ? hello.error : "vmdeck answered something unexpected";
      disconnected(why);
      socket.close();
      return;
    }
    // noVNC attaches to the open socket right here, in this same event task: it sets
    // onmessage before the next message (the VM's first RFB bytes) is dispatched, so none is
    // lost between the preamble and RFB taking over.
    rfb = new RFB(screen, socket, { shared: true });
    rfb.viewOnly = viewOnly;
    rfb.scaleViewport = true;
    rfb.background = "#000";
    // For the browser's developer tools and the browser test (which flips a viewer's page to
    // interactive to show that the server still drops its keys): a script in this page could
    // reach the socket anyway, so this hands out nothing new.
    window.vmdeckConsole = rfb;
    rfb.addEventListener("connect", () => {
      show(
        "connected",
        viewOnly ? "Connected (view-only)." : "Connected (interactive): click the screen to type."
      );
      if (!viewOnly) rfb.focus();
    });
    rfb.addEventListener("disconnect", () => disconnected(closeWords()));
    rfb.addEventListener("securityfailure", (ev) =>
      disconnected(`the VM's display refused vmdeck: ${ev.detail.reason || "no reason given"}`)
    );
  };
  socket.addEventListener("message", preamble);

  if (cad) cad.addEventListener("click", () => rfb && rfb.sendCtrlAltDel());
  if (full) {
    full.hidden = !document.fullscreenEnabled;
    full.addEventListener("click", () => {
      if (document.fullscreenElement) document.exitFullscreen();
      else screen.requestFullscreen().catch(() => {});
    });
  }
  if (textForm && textField) {
    textForm.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!rfb || status.dataset.state !== "connected") return;
      const text = textField.value;
      const keys = keysFor(text);
      if (keys.error) {
        textNote.textContent = keys.error;
        return;
      }
      for (const [keysym, shifted] of keys.list) {
        if (shifted) rfb.sendKey(KeyTable.XK_Shift_L, "ShiftLeft", true);
        rfb.sendKey(keysym, null);
        if (shifted) rfb.sendKey(KeyTable.XK_Shift_L, "ShiftLeft", false);
      }
      if (textEnter && textEnter.checked) rfb.sendKey(KeyTable.XK_Return, "Enter");
      textNote.textContent = `Typed ${text.length} character(s)${
        textEnter && textEnter.checked ? " and Enter" : ""
      }.`;
      textField.value = "";
      rfb.focus();
    });
  }
}

// Characters that need Shift on a US keyboard. QEMU's VNC server turns a keysym into a key of
// its keyboard layout (en-us unless the domain says otherwise) but does not press Shift itself.
const SHIFTED = /[A-Z~!@#$%^&*()_+{}|:"<>?]/;

// The key presses that type `text`: one keysym per character (for printable ASCII the
// keysym is the character's code), with Shift where a US layout needs it. Any other character
// (accents, other scripts, control characters) refuses the whole text, so nothing is half
// typed: a VM's keyboard has no key for most of them.
export function keysFor(text) {
  const list = [];
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (code < 0x20 || code > 0x7e) {
      const shown = code < 0x20 ? `U+${code.toString(16).padStart(4, "0")}` : `"${ch}"`;
      return {
        error: `Nothing was typed: ${shown} is not a printable ASCII character, the only ones ` +
          "the console can type (US keyboard layout).",
      };
    }
    list.push([code, SHIFTED.test(ch)]);
  }
  return { list };
}

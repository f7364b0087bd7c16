// The sign-in form shared by the chat app and the console: a member's email and password,
// or an API key. On success the server has set the session cookies; we just re-render.

import { signIn } from "./api.js";
import { $, clear, h } from "./dom.js";

export function showSignIn(container, onSignedIn) {
  const error = h("p", { class: "error", role: "alert", id: "signin-error" });
  const email = h("input", { id: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", { id: "password", type: "password", autocomplete: "current-password", required: true });
  const key = h("input", { id: "api-key", type: "password", autocomplete: "off", placeholder: "lv-…", required: true });

  async function submit(event, body) {
    event.preventDefault();
    error.textContent = "";
    const button = event.target.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await signIn(body());
      onSignedIn();
    } catch (err) {
      error.textContent = err.message;
    } finally {
      button.disabled = false;
    }
  }

  clear(container).append(
    h(
      "div",
      { class: "card signin-card" },
      h("h1", {}, "Sign in to Levant"),
      h("p", { class: "muted" }, "Your own models, on your own machines."),
      error,
      h(
        "form",
        { id: "password-form", onsubmit: (e) => submit(e, () => ({ email: email.value, password: password.value })) },
        h("label", { for: "email" }, "Email"),
        email,
        h("label", { for: "password" }, "Password"),
        password,
        h("button", { type: "submit", class: "primary wide" }, "Sign in"),
      ),
      h("p", { class: "divider" }, h("span", {}, "or")),
      h(
        "form",
        { id: "key-form", onsubmit: (e) => submit(e, () => ({ api_key: key.value })) },
        h("label", { for: "api-key" }, "API key"),
        key,
        h("button", { type: "submit", class: "wide" }, "Sign in with an API key"),
      ),
    ),
  );
  container.hidden = false;
  $("#email", container).focus();
}

export function setupThemeToggle(button) {
  const sync = () => {
    const dark = document.documentElement.dataset.theme === "dark";
    button.setAttribute("aria-pressed", String(dark)); // the label stays "Dark theme"
  };
  button.addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try {
      localStorage.setItem("levant-theme", next);
    } catch {
      /* private mode: the choice lasts for this page */
    }
    sync();
  });
  sync();
}

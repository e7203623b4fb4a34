// keypal admin: dialogs, confirmations, copy and reveal. No inline scripts (strict CSP).
"use strict";

function csrfToken() {
  const input = document.querySelector('input[name="csrf"]');
  return input ? input.value : "";
}

function flash(message, kind) {
  let p = document.querySelector("p.flash");
  if (!p) {
    p = document.createElement("p");
    p.setAttribute("role", "status");
    document.querySelector("main").prepend(p);
  }
  p.className = "flash " + kind;
  p.textContent = message;
}

async function reveal(url, target) {
  try {
    const response = await fetch(url, { method: "POST", headers: { "x-csrf-token": csrfToken() }, credentials: "same-origin" });
    if (response.redirected) {
      flash("The session has ended: reload the page and log in again.", "err");
    } else if (!response.ok) {
      flash("Could not reveal it (" + response.status + ").", "err");
    } else {
      const body = await response.json();
      document.getElementById(target).textContent = body.key || body.service_key;
    }
  } catch (e) {
    flash("Could not reach the server.", "err");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  // Dialogs rendered with a secret in them open as modals. The page came from a POST:
  // put its own address in the history instead, so reloading does not post again. Once
  // closed, the secret leaves the page.
  for (const dialog of document.querySelectorAll("dialog[data-autoshow]")) {
    if (dialog.dataset.page) history.replaceState(null, "", dialog.dataset.page);
    dialog.addEventListener("close", () => {
      // (Also fired, late, by the close() below: the dialog is open again by then.)
      if (!dialog.open) for (const field of dialog.querySelectorAll("textarea, input")) field.value = "";
    });
    if (dialog.open) dialog.close();
    dialog.showModal();
  }
  // A form sent back with errors: start at the first field to fix.
  if (!document.querySelector("dialog[open]")) document.querySelector('[aria-invalid="true"]')?.focus();
  for (const button of document.querySelectorAll("[data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const input = document.getElementById(button.dataset.copy);
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        button.textContent = "Copied";
      } catch (e) {
        button.textContent = "Press Ctrl+C";
      }
    });
  }
  // Forms with data-confirm ask first, in a dialog.
  const confirmDialog = document.getElementById("confirm");
  let pending = null;
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (form.dataset.confirmed === "yes") return;
      event.preventDefault();
      pending = form;
      document.getElementById("confirm-text").textContent = form.dataset.confirm;
      confirmDialog.showModal();
    });
  }
  document.getElementById("confirm-yes")?.addEventListener("click", () => {
    confirmDialog.close();
    if (pending) {
      pending.dataset.confirmed = "yes";
      pending.requestSubmit();
    }
  });
  for (const button of document.querySelectorAll("[data-reveal-key]")) {
    button.addEventListener("click", () => reveal("/admin/keys/" + button.dataset.revealKey + "/reveal", button.dataset.target));
  }
  for (const button of document.querySelectorAll("[data-reveal-service-key]")) {
    button.addEventListener("click", () => reveal("/admin/service-key/reveal", button.dataset.target));
  }
});

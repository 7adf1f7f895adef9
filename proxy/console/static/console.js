// The console's only script: live updates (Server-Sent Events), confirmations, the editor.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const target of document.querySelectorAll("[data-live]")) {
    const status = document.querySelector(`[data-status-for="${target.id}"]`);
    const source = new EventSource(target.dataset.live);
    source.addEventListener("html", (event) => {
      target.innerHTML = event.data;
      if (status) status.textContent = "live";
    });
    source.addEventListener("status", (event) => {
      if (status) status.textContent = event.data;
    });
    source.onerror = () => {
      if (status) status.textContent = "reconnecting…";
    };
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  for (const button of document.querySelectorAll("button.edit")) {
    button.addEventListener("click", () => {
      document.getElementById("edit-name").value = button.dataset.name;
      document.getElementById("edit-spec").value = button.dataset.spec;
      document.getElementById("edit-spec").focus();
    });
  }
});

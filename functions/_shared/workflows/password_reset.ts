/** The `password-reset` workflow: a link to choose a new password. */
import { z } from "zod";
import { defineWorkflow, escapeHtml, httpUrl, layout, minutes } from "./common.ts";

/** Sends a password-reset link and how long it is valid. */
export const passwordReset = defineWorkflow({
  name: "password-reset",
  schema: z.object({ resetUrl: httpUrl(), expiresInMinutes: minutes }),
  secretFields: ["resetUrl"],
  render: ({ resetUrl, expiresInMinutes }) => ({
    subject: "Reset your password",
    text: `Someone asked to reset your password. Choose a new one here: ${resetUrl}\n\n` +
      `The link expires in ${expiresInMinutes} minutes. If it was not you, ignore this email.\n`,
    html: layout(
      "Reset your password",
      `<p>Someone asked to reset your password.</p>
<p><a href="${escapeHtml(resetUrl)}">Choose a new password</a></p>
<p>The link expires in ${escapeHtml(expiresInMinutes)} minutes. If it was not you, ignore this email.</p>`,
    ),
  }),
});

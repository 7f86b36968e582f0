/** The `verification-code` workflow: a one-time code and how long it is valid. */
import { z } from "zod";
import { defineWorkflow, escapeHtml, layout, minutes } from "./common.ts";

/** Sends a one-time verification code. */
export const verificationCode = defineWorkflow({
  name: "verification-code",
  schema: z.object({
    code: z.string().regex(/^[A-Za-z0-9-]{4,32}$/, "must be 4 to 32 letters, digits or dashes"),
    expiresInMinutes: minutes,
  }),
  secretFields: ["code"],
  render: ({ code, expiresInMinutes }) => ({
    subject: "Your verification code",
    text: `Your verification code is ${code}.\n\nIt expires in ${expiresInMinutes} minutes. ` +
      `If you did not ask for it, you can ignore this email.\n`,
    html: layout(
      "Your verification code",
      `<p>Your verification code is</p>
<p style="font-size: 24px; font-weight: bold; letter-spacing: 4px">${escapeHtml(code)}</p>
<p>It expires in ${escapeHtml(expiresInMinutes)} minutes. If you did not ask for it, you can ignore this email.</p>`,
    ),
  }),
});

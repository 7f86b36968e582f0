/** The `invite` workflow: someone invites the recipient to an organization. */
import { z } from "zod";
import { defineWorkflow, escapeHtml, httpUrl, layout, singleLine } from "./common.ts";

/** Sends an invitation with its accept link. */
export const invite = defineWorkflow({
  name: "invite",
  schema: z.object({
    inviterName: singleLine(100),
    organizationName: singleLine(100),
    inviteUrl: httpUrl(),
  }),
  secretFields: ["inviteUrl"],
  render: ({ inviterName, organizationName, inviteUrl }) => ({
    subject: `${inviterName} invited you to ${organizationName}`,
    text: `${inviterName} invited you to join ${organizationName}.\n\nAccept the invitation: ${inviteUrl}\n`,
    html: layout(
      "Invitation",
      `<p>${escapeHtml(inviterName)} invited you to join <strong>${escapeHtml(organizationName)}</strong>.</p>
<p><a href="${escapeHtml(inviteUrl)}">Accept the invitation</a></p>`,
    ),
  }),
});

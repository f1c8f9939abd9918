import { type Html, html } from "./html.js";

/**
 * How to install a .p12 on each platform people use, in plain words. Chrome and Edge use the
 * operating system's store on Windows and macOS, so their steps point there; Firefox keeps its own.
 */
export function installSteps(file: string): Html {
  const f = html`<strong>${file}</strong>`;
  return html`<section aria-labelledby="install"><h2 id="install">Install it</h2>
<p>Pick your system. You will be asked for the password once; after that the browser offers the certificate by itself when a site asks for it.</p>
<details class="howto" open><summary>Chrome or Edge on Windows — and Windows in general</summary><ol class="steps">
<li>Open ${f} from your Downloads (double-click). The Certificate Import Wizard starts.</li>
<li>Choose <em>Current User</em>, then <em>Next</em> twice.</li>
<li>Type the password, leave the other options as they are, and click <em>Next</em>.</li>
<li>Keep <em>Automatically select the certificate store</em>, then <em>Next</em> and <em>Finish</em>.</li>
<li>Close every Chrome or Edge window and start it again.</li>
</ol></details>
<details class="howto"><summary>Safari, Chrome or Edge on a Mac</summary><ol class="steps">
<li>Open ${f} from Downloads (double-click). Keychain Access opens.</li>
<li>Choose the <em>login</em> keychain and click <em>Add</em>, then type the password.</li>
<li>The first time a site asks for it, macOS asks to allow access to the key: click <em>Always Allow</em>.</li>
<li>If macOS says the password is wrong although it is right, ask for a new link and tick <em>older Windows and macOS</em> when you use it.</li>
</ol></details>
<details class="howto"><summary>Chrome on Linux</summary><ol class="steps">
<li>Open <code>chrome://certificate-manager</code> (older versions: Settings → Privacy and security → Security → Manage certificates).</li>
<li>Under <em>Your certificates</em>, click <em>Import</em>, pick ${f} and type the password.</li>
</ol></details>
<details class="howto"><summary>Firefox (every system)</summary><ol class="steps">
<li>Open Settings → Privacy &amp; Security, scroll to <em>Certificates</em> and click <em>View Certificates…</em>.</li>
<li>On the <em>Your Certificates</em> tab click <em>Import…</em>, pick ${f} and type the password.</li>
<li>Close the dialog; Firefox uses the certificate right away.</li>
</ol></details>
<details class="howto"><summary>Android</summary><ol class="steps">
<li>Open Settings → Security (or Security &amp; privacy) → More → Encryption &amp; credentials → <em>Install a certificate</em>.</li>
<li>Choose <em>VPN &amp; app user certificate</em>, pick ${f} from Downloads and type the password.</li>
<li>Chrome then offers it when a site asks for a certificate.</li>
</ol></details>
<details class="howto"><summary>iPhone and iPad</summary><ol class="steps">
<li>Open ${f} (in Files, or right after downloading in Safari). iOS says <em>Profile Downloaded</em>.</li>
<li>Open Settings → General → VPN &amp; Device Management (older: Settings → <em>Profile Downloaded</em>) and tap the profile, then <em>Install</em>.</li>
<li>Enter your device passcode, then the certificate's password. Safari uses it when a site asks.</li>
</ol></details>
<p>Then open <a href="/check">Check my certificate</a> to see that your browser presents it.</p>
</section>`;
}

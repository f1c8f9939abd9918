import type { Command } from "commander";
import {
  CA_SETTING_KEYS,
  type CaSettingName,
  getCaSetting,
  openCa,
  setAdmins,
  setPublicUrl,
} from "../ca/index.js";
import { MtlsError } from "../errors.js";
import { addStateOption, cliActor, note, out, pathsFrom, type StateOpts } from "./common.js";

const SETTABLE = ["public-url", "admins"] as const;

function settingName(key: string, allowed: readonly string[]): CaSettingName {
  if (!allowed.includes(key)) {
    throw new MtlsError("E_USAGE", `unknown setting "${key}" (one of ${allowed.join(", ")})`);
  }
  return key as CaSettingName;
}

/**
 * `mtls ca set KEY VALUE` and `mtls ca get [KEY]`, added to the `ca` command group (which also holds
 * `mtls ca serve`). Settings live in the state database; the CA reads them when it opens.
 */
export function registerCaSettings(ca: Command): void {
  const set = ca
    .command("set")
    .description(
      "change a CA setting: public-url URL (none: remove; applies to certificates issued from now on), admins a,b",
    )
    .argument("<key>", SETTABLE.join(" | "))
    .argument("<value>", "the new value");
  addStateOption(set);
  set.action(async (key: string, value: string, opts: StateOpts) => {
    const name = settingName(key, SETTABLE);
    const authority = await openCa(pathsFrom(opts));
    try {
      if (name === "public-url") {
        const url = value === "none" || value === "" ? null : value;
        await setPublicUrl(authority, url, cliActor());
        out(url ? `public-url set to ${url}` : "public-url removed");
        note("mtls: certificates issued from now on carry it; a running `mtls ca serve` needs a restart");
      } else {
        const names = await setAdmins(authority, value.split(","), cliActor());
        out(names.length ? `admins: ${names.join(", ")}` : "admins: none");
      }
    } finally {
      await authority.store.close();
    }
  });

  const get = ca
    .command("get")
    .description("show CA settings: name, public-url, admins")
    .argument("[key]", Object.keys(CA_SETTING_KEYS).join(" | "));
  addStateOption(get);
  get.action(async (key: string | undefined, opts: StateOpts) => {
    const names = key
      ? [settingName(key, Object.keys(CA_SETTING_KEYS))]
      : (Object.keys(CA_SETTING_KEYS) as CaSettingName[]);
    const authority = await openCa(pathsFrom(opts));
    try {
      for (const name of names) {
        const value = (await getCaSetting(authority, name)) ?? "";
        out(key ? value : `${name}: ${value || "(not set)"}`);
      }
    } finally {
      await authority.store.close();
    }
  });
}

import type { RuleSpec } from "./types.js";

/** The tunnel's --allow-* flags, as commander collects them (repeatable flags become lists). */
export interface AllowFlags {
  allowCn?: string[];
  allowOu?: string[];
  allowDns?: string[];
  allowUri?: string[];
  allowEmail?: string[];
  allowFingerprint?: string[];
  allowSpki?: string[];
  allowAll?: boolean;
}

/**
 * Rules from --allow-* flags, as ghostunnel's flags behave: every value is a rule of its own, so
 * all values of all kinds are alternatives (`--allow-cn alice --allow-ou ops` allows alice, and
 * anyone in ops). No flag at all gives no rule, which denies everyone. Values are checked by
 * compilePolicy, not here.
 */
export function rulesFromFlags(flags: AllowFlags): RuleSpec[] {
  const rules: RuleSpec[] = [];
  const add = (values: string[] | undefined, make: (v: string) => RuleSpec) => {
    for (const v of values ?? []) rules.push(make(v));
  };
  add(flags.allowCn, (v) => ({ cn: [v] }));
  add(flags.allowOu, (v) => ({ ou: [v] }));
  add(flags.allowDns, (v) => ({ dns: [v] }));
  add(flags.allowUri, (v) => ({ uri: [v] }));
  add(flags.allowEmail, (v) => ({ email: [v] }));
  add(flags.allowFingerprint, (v) => ({ fingerprint: [v] }));
  add(flags.allowSpki, (v) => ({ spki: [v] }));
  // Last, so that a peer a specific rule also allows is logged under that rule.
  if (flags.allowAll) rules.push({ all: true });
  return rules;
}

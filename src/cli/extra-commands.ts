/** Subcommands registered by the other parts (neural, offline), each with its usage line. */
export interface ExtraCommand {
  readonly name: string;
  readonly usage: string;
  run(args: readonly string[]): Promise<number>;
}

export const extraCommands: ExtraCommand[] = [];

/** Subcommands registered by the other parts (neural, offline), each with its usage line. */
export interface ExtraCommand {
  readonly name: string;
  readonly usage: string;
  /** Runs until stopped and logs pino JSON; its failures are reported as pino lines too. */
  readonly longRunning?: boolean;
  run(args: readonly string[]): Promise<number>;
}

export const extraCommands: ExtraCommand[] = [];

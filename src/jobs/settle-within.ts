/** Resolves when `work` settles or after `waitMs`, whichever comes first. */
export async function settleWithin(
  work: Promise<unknown> | undefined,
  waitMs: number,
): Promise<void> {
  let bound: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.allSettled([work]),
    new Promise<void>((resolve) => {
      bound = setTimeout(resolve, waitMs);
      bound.unref();
    }),
  ]);
  clearTimeout(bound);
}

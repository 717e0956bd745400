// The daily digest: a reducer on acme/activity, the stream that receives the app's
// events (signup, order with {amount}, ...) and the `tick` events piped in from a cron
// stream. The state is the summary of the current period; each tick closes it,
// dispatches it as a `digest` event to acme/digests and starts the next period.
//
// The state (GET /acme/activity.digest) and each digest's data:
//   from         when the period began: the previous tick's scheduled time, or, before
//                the first tick, the timestamp of the first event folded (unix ms, UTC)
//   to           (digests only) the closing tick's scheduled time
//   counts       events of the period per type, e.g. {"signup": 2, "order": 3}
//   ordersTotal  the sum of the `amount` of the period's `order` events
//
// dispatch() appends exactly once per source event: the digest's id is derived from
// the tick that closed the period, so a rebuild or a redeploy never sends it twice.

const period = (from) => ({ from, counts: {}, ordersTotal: 0 });

// money: keep two decimals, so 0.1 + 0.2 sums to 0.3
const cents = (x) => Math.round(x * 100) / 100;

export default (state, event) => {
  state ??= period(event.timestamp);
  if (event.type === "tick") {
    // a cron tick's data is {"timestamp": ms}, the scheduled time of the occurrence
    const to = event.data?.timestamp ?? event.timestamp;
    // a tick scheduled before the period began closes nothing: a catch-up tick, when
    // the cron stream starts again, for an occurrence before the first event (an event
    // that beat the tick's arrival stays in the next period)
    if (to <= state.from) return state;
    dispatch("digests", {
      type: "digest",
      data: { from: state.from, to, counts: state.counts, ordersTotal: state.ordersTotal },
    });
    return period(to);
  }
  state.counts[event.type] = (state.counts[event.type] ?? 0) + 1;
  if (event.type === "order") {
    const amount = Number(event.data?.amount);
    if (Number.isFinite(amount)) state.ordersTotal = cents(state.ordersTotal + amount);
  }
  return state;
};

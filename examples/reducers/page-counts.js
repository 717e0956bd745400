// Clickstream counts: total clicks and clicks per page.
export default (state = { total: 0, pages: {} }, event) => {
  state.total++;
  state.pages[event.data.url] = (state.pages[event.data.url] ?? 0) + 1;
  return state;
};

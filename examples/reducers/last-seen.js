// A bare function expression: the index and time of the latest event.
(state, event, index) => ({ index, at: event.timestamp })

// A shopping cart in TypeScript: items added and removed, with a running total.
interface Item { sku: string; price: number }
interface Cart { items: Record<string, number>; total: number }
type CartEvent =
  | { type: "added"; data: Item }
  | { type: "removed"; data: Item };

export default (cart: Cart = { items: {}, total: 0 }, event: CartEvent): Cart => {
  const { sku, price } = event.data;
  if (event.type === "added") {
    cart.items[sku] = (cart.items[sku] ?? 0) + 1;
    cart.total += price;
  } else if ((cart.items[sku] ?? 0) > 0) {
    cart.items[sku] -= 1;
    cart.total -= price;
  }
  return cart;
};

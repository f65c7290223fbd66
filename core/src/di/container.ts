import { instanceCachingFactory, type DependencyContainer } from 'tsyringe';
import type { Token } from '@tessera/plugin-sdk';

// Typed wrappers: tsyringe's own signatures lose the type a symbol token carries.

export function provideValue<T>(container: DependencyContainer, key: Token<T>, value: T): void {
  container.register<T>(key, { useValue: value });
}

/** Registers a lazily built singleton of this container (never of the global one). */
export function provideFactory<T>(container: DependencyContainer, key: Token<T>, build: (c: DependencyContainer) => T): void {
  container.register<T>(key, { useFactory: instanceCachingFactory<T>(build) });
}

export function resolve<T>(container: DependencyContainer, key: Token<T>): T {
  return container.resolve<T>(key);
}
